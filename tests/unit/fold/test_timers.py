"""The run fold's ``timer.fired``, without Kafka: sleeps and retries wake at their due
time, never early, and once."""

from __future__ import annotations

from engine.fold import apply
from tests.unit.fold.test_outcomes import done, failed, only_task, report, requested
from tests.unit.memtables import MemTables
from topics.records import STEP_SLEEP, Outcome, TimerFired


def test_sleep_never_wakes_early_and_fires_once() -> None:
    t = MemTables()
    apply(t, requested())
    apply(t, report(1, Outcome(op=STEP_SLEEP, step_id="nap", until_ms=10_000), ts=2000))
    w = t.runs["R1"]["waiting"]
    early = TimerFired(run_id="R1", timer_id=w["timer_id"], due_ms=10_000, ts=9_999)
    assert apply(t, early) == []
    assert t.runs["R1"]["steps"]["nap"]["status"] == "sleeping"
    fire = TimerFired(run_id="R1", timer_id=w["timer_id"], due_ms=10_000, ts=10_001)
    task = only_task(apply(t, fire))
    assert task.steps["nap"] == {"data": None}
    snap = t.snapshot()
    assert apply(t, fire) == []
    assert t.snapshot() == snap


def test_parallel_outcomes_wait_for_latest_timer() -> None:
    t = MemTables()
    apply(t, requested())
    apply(t, report(1, done("a", 1), Outcome(op=STEP_SLEEP, step_id="b", until_ms=5000),
                    failed("c", after=7000), ts=2000))
    w = t.runs["R1"]["waiting"]
    assert w["due_ms"] == 7000
    task = only_task(apply(t, TimerFired(run_id="R1", timer_id=w["timer_id"], due_ms=7000,
                                         ts=7000)))
    assert task.steps == {"a": {"data": 1}, "b": {"data": None}}
    assert task.step_attempts == {"c": 1}
