"""The run fold's ``outcomes.reported``, without Kafka: steps memoized, retried with
backoff or failed; the function completing, retrying or failing; records that do not
apply; replay determinism."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import fold
from engine.fold import NotApplicable, apply, backoff_ms
from engine.fold.outcomes import MAX_BACKOFF_MS
from tests.unit.memtables import MemTables
from topics.records import (
    FUNCTION_COMPLETED,
    FUNCTION_FAILED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_SLEEP,
    Outcome,
    OutcomesReported,
    RunRequested,
    Task,
    TimerFired,
)

EVENT = {"name": "shop/order.created", "data": {"order_id": 7}, "id": "E1", "ts": 1000}


def requested(run_id: str = "R1", retries: int = 2, ts: int = 1000) -> RunRequested:
    return RunRequested(run_id=run_id, fn_id="shop-process-order", app_id="shop",
                        partition_key=run_id, event=EVENT, events=[EVENT], retries=retries,
                        backoff_base_ms=1000, ts=ts)


def report(seq: int, *outcomes: Outcome, run_id: str = "R1", ts: int = 2000
           ) -> OutcomesReported:
    return OutcomesReported(run_id=run_id, task_seq=seq, outcomes=list(outcomes),
                            worker="w", ts=ts)


def done(step_id: str, output: object = None) -> Outcome:
    return Outcome(op=STEP_COMPLETED, step_id=step_id, output=output)


def failed(step_id: str, retriable: bool = True, after: int | None = None) -> Outcome:
    return Outcome(op=STEP_FAILED, step_id=step_id, retriable=retriable, retry_after_ms=after,
                   error={"name": "ValueError", "message": "boom", "stack": ""})


def only_task(emits: list[fold.Emit]) -> Task:
    assert len(emits) == 1 and emits[0].topic == "tasks"
    task = emits[0].record
    assert isinstance(task, Task)
    return task


def test_steps_memoize_then_function_completes() -> None:
    t = MemTables()
    apply(t, requested())
    task = only_task(apply(t, report(1, done("validate", {"ok": True}))))
    assert task.seq == 2 and task.steps == {"validate": {"data": {"ok": True}}}
    task = only_task(apply(t, report(2, done("charge", 5), ts=3000)))
    assert task.steps["charge"] == {"data": 5}
    ended = apply(t, report(3, Outcome(op=FUNCTION_COMPLETED, output={"r": 1}), ts=4000))
    # The only emit of an ending without a parent: stepstream/function.finished.
    assert [(e.topic, e.record.name, e.record.data["status"], e.record.data["output"])
            for e in ended] == [("events", "stepstream/function.finished", "completed",
                                 {"r": 1})]
    state = t.runs["R1"]
    assert (state["status"], state["output"], state["ended_at"]) == ("completed", {"r": 1}, 4000)
    assert state["waiting"] is None


def test_stale_and_duplicate_reports_change_nothing() -> None:
    t = MemTables()
    apply(t, requested())
    apply(t, report(1, done("a", 1)))
    snap = t.snapshot()
    assert apply(t, report(1, done("a", 2))) == []  # the same report, re-delivered
    assert apply(t, report(7, done("b", 2))) == []  # a task that was never dispatched
    assert t.snapshot() == snap


def test_step_retries_with_backoff_then_errors_into_memo() -> None:
    t = MemTables()
    apply(t, requested(retries=1))
    assert apply(t, report(1, failed("charge"), ts=2000)) == []
    waiting = t.runs["R1"]["waiting"]
    assert waiting["kind"] == "timer" and waiting["reason"] == "retry"
    due = waiting["due_ms"]
    assert 2000 + 500 <= due <= 2000 + 1000
    assert (due, "R1", waiting["timer_id"]) in t.timers
    task = only_task(apply(t, TimerFired(run_id="R1", timer_id=waiting["timer_id"],
                                         due_ms=due, ts=due + 3)))
    assert task.step_attempts == {"charge": 1} and task.attempt == 1 and task.steps == {}
    assert t.timers == set()
    task = only_task(apply(t, report(task.seq, failed("charge"), ts=due + 10)))
    assert task.steps["charge"]["error"]["message"] == "boom"
    assert t.runs["R1"]["steps"]["charge"]["status"] == "failed"


def test_non_retriable_step_failure_goes_straight_to_memo() -> None:
    t = MemTables()
    apply(t, requested(retries=5))
    task = only_task(apply(t, report(1, failed("charge", retriable=False))))
    assert "error" in task.steps["charge"]


def test_retry_after_is_respected_exactly() -> None:
    t = MemTables()
    apply(t, requested())
    apply(t, report(1, failed("charge", after=60_000), ts=2000))
    assert t.runs["R1"]["waiting"]["due_ms"] == 60_000


def test_function_failure_retries_then_fails_run() -> None:
    t = MemTables()
    apply(t, requested(retries=1))
    err = {"name": "KeyError", "message": "x", "stack": ""}
    apply(t, report(1, Outcome(op=FUNCTION_FAILED, error=err), ts=2000))
    w = t.runs["R1"]["waiting"]
    task = only_task(apply(t, TimerFired(run_id="R1", timer_id=w["timer_id"],
                                         due_ms=w["due_ms"], ts=w["due_ms"])))
    assert task.attempt == 1
    apply(t, report(task.seq, Outcome(op=FUNCTION_FAILED, error=err), ts=9000))
    state = t.runs["R1"]
    assert state["status"] == "failed" and state["error"] == err and state["ended_at"] == 9000


def test_inapplicable_records_raise_without_changes() -> None:
    t = MemTables()
    with pytest.raises(NotApplicable):
        apply(t, report(1, done("a")))
    apply(t, requested())
    snap = t.snapshot()
    with pytest.raises(NotApplicable):
        apply(t, report(1, Outcome(op="bogus")))
    with pytest.raises(NotApplicable):
        apply(t, report(1))
    assert t.snapshot() == snap


def test_backoff_grows_is_bounded_and_deterministic() -> None:
    delays = [backoff_ms(1000, n, "R", "s") for n in range(6)]
    for n, d in enumerate(delays):
        assert 1000 * 2**n * 0.5 <= d < 1000 * 2**n
    assert backoff_ms(1000, 60, "R", "s") <= MAX_BACKOFF_MS
    assert delays == [backoff_ms(1000, n, "R", "s") for n in range(6)]
    assert len({backoff_ms(1000, 3, f"R{i}", "s") for i in range(50)}) > 10  # jitter spreads


# A random but valid history for several runs: replaying it into fresh tables must give
# the same bytes, and re-applying any prefix again (re-delivery) must change nothing.
ops = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(
    ["done", "fail", "fatal", "sleep", "finish", "crash", "dup", "timer"])), max_size=40)


def drive(history: list[tuple[int, str]]) -> tuple[MemTables, list[object]]:
    t = MemTables()
    log: list[object] = []
    now = 1000

    def feed(rec: object) -> None:
        log.append(rec)
        apply(t, rec)  # type: ignore[arg-type]

    for r in range(3):
        feed(requested(f"R{r}", ts=now))
    for r, op in history:
        now += 100
        run_id = f"R{r}"
        state = t.runs[run_id]
        w = state["waiting"]
        if state["status"] != "running" or w is None:
            continue
        if w["kind"] == "timer":
            if op in ("timer", "dup"):
                feed(TimerFired(run_id=run_id, timer_id=w["timer_id"], due_ms=w["due_ms"],
                                ts=max(now, w["due_ms"])))
            continue
        seq = w["seq"]
        step = f"s{len(state['steps'])}"
        outcome = {
            "done": done(step, now), "fail": failed(step), "fatal": failed(step, False),
            "sleep": Outcome(op=STEP_SLEEP, step_id=step, until_ms=now + 50),
            "finish": Outcome(op=FUNCTION_COMPLETED, output=now),
            "crash": Outcome(op=FUNCTION_FAILED, error={"name": "E", "message": "m"}),
            "dup": done(step, 1), "timer": done(step, 2),
        }[op]
        rec = report(seq, outcome, run_id=run_id, ts=now)
        feed(rec)
        if op == "dup":
            feed(rec)
    return t, log


@settings(max_examples=150, deadline=None)
@given(ops)
def test_replay_gives_identical_state(history: list[tuple[int, str]]) -> None:
    live, log = drive(history)
    replayed = MemTables()
    for rec in log:
        apply(replayed, rec)  # type: ignore[arg-type]
    assert replayed.snapshot() == live.snapshot()
    # Re-delivering the whole log again changes nothing: every record applies once.
    for rec in log:
        apply(replayed, rec)  # type: ignore[arg-type]
    assert replayed.snapshot() == live.snapshot()
