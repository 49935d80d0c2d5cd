"""The worker's jobs (sdk/_jobs.py), no Kafka: which received tasks start, which are
stale or superseded, and which running passes must stop running ahead."""

from __future__ import annotations

from sdk._jobs import Jobs
from sdk._offsets import OffsetTracker
from topics import records


def task(run_id: str, seq: int) -> records.Task:
    return records.Task(run_id=run_id, fn_id="f", app_id="a", seq=seq, partition_key=run_id,
                        event={}, events=[], steps={}, attempt=0, step_attempts={}, ts=0)


def jobs() -> tuple[Jobs, OffsetTracker]:
    tracker = OffsetTracker()
    return Jobs(tracker, seq_memory=100), tracker


def received(j: Jobs, tracker: OffsetTracker, t: records.Task, offset: int) -> None:
    tracker.start(0, offset)
    j.add(t, 0, offset)


def test_a_newer_task_of_a_running_run_stops_the_running_pass_from_going_ahead() -> None:
    # A takeover ran task 1 twice; the other copy's report made the engine write task 2.
    # This worker's pass over task 1 must not run ahead into task 2's steps.
    j, tracker = jobs()
    received(j, tracker, task("R", 1), 0)
    first = j.next_to_start()
    assert first is not None and not first.revoked
    received(j, tracker, task("R", 2), 1)
    assert first.revoked
    second = j.next_to_start()
    assert second is not None and second.task.seq == 2 and not second.revoked
    j.finish(first)
    j.finish(second)
    assert tracker.position(0) == 2


def test_another_runs_task_or_an_older_copy_does_not_stop_a_running_pass() -> None:
    j, tracker = jobs()
    received(j, tracker, task("R", 2), 0)
    running = j.next_to_start()
    assert running is not None
    received(j, tracker, task("S", 7), 1)
    received(j, tracker, task("R", 1), 2)  # stale: finished unrun
    received(j, tracker, task("R", 2), 3)  # a copy of the running one: joins it
    assert not running.revoked
    assert j.next_to_start() is not None  # S's task
    assert j.next_to_start() is None
    j.finish(running)
    assert tracker.position(0) == 1  # S's task at offset 1 still runs


def test_a_queued_task_is_superseded_by_a_newer_one_of_its_run() -> None:
    j, tracker = jobs()
    received(j, tracker, task("R", 1), 0)
    received(j, tracker, task("R", 2), 1)
    started = j.next_to_start()
    assert started is not None and started.task.seq == 2
    assert j.next_to_start() is None
    assert tracker.position(0) == 1  # offset 0 is done, 1 runs
