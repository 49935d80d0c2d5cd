"""The run fold's waits (`step.wait_for_event`): registration, match against timeout, and
what cannot be waited on, without Kafka."""

from __future__ import annotations

from engine.fold import apply
from tests.unit.fold.builders import PAID, of, report, requested, wait_outcome, waiting_run
from tests.unit.memtables import MemTables
from topics.records import (
    STEP_WAIT,
    Outcome,
    Task,
    TimerFired,
    WaitCleared,
    WaitRegistered,
    WaitResolved,
)


def test_wait_registers_with_the_triggers_match_value_and_arms_its_timeout() -> None:
    t = MemTables()
    reg = waiting_run(t)
    assert (reg.event, reg.match_field, reg.match_value, reg.kind) == (
        "billing/invoice.paid", "data.invoice_id", 42, "step")
    assert reg.wait_id == "R1/paid" and reg.expires_ms == 10_000
    assert (10_000, "R1", "wait:1") in t.timers
    assert t.runs["R1"]["steps"]["paid"]["status"] == "waiting"


def test_event_first_then_timeout_records_only_the_match() -> None:
    t = MemTables()
    waiting_run(t)
    emits = apply(t, WaitResolved(run_id="R1", wait_id="R1/paid", kind="step", event=PAID,
                                  ts=5000))
    [task] = of(emits, Task)
    assert task.steps["paid"] == {"data": PAID}
    assert not t.timers
    assert apply(t, TimerFired(run_id="R1", timer_id="wait:1", due_ms=10_000,
                               ts=10_001)) == []
    assert t.runs["R1"]["steps"]["paid"]["output"] == PAID


def test_timeout_first_then_event_records_only_the_timeout() -> None:
    t = MemTables()
    waiting_run(t)
    emits = apply(t, TimerFired(run_id="R1", timer_id="wait:1", due_ms=10_000, ts=10_000))
    [task] = of(emits, Task)
    assert task.steps["paid"] == {"data": None}
    [cleared] = of(emits, WaitCleared)
    assert cleared.wait_id == "R1/paid" and cleared.match_value == 42
    assert apply(t, WaitResolved(run_id="R1", wait_id="R1/paid", kind="step", event=PAID,
                                 ts=10_000)) == []
    assert t.runs["R1"]["steps"]["paid"]["output"] is None
    kinds = [e["type"] for e in t.runs["R1"]["timeline"]]
    assert "wait.timed_out" in kinds and "wait.resolved" not in kinds


def test_a_missing_match_value_can_only_time_out() -> None:
    t = MemTables()
    apply(t, requested())
    emits = apply(t, report(1, wait_outcome(match="data.nope")))
    assert of(emits, WaitRegistered) == []
    assert (10_000, "R1", "wait:1") in t.timers


def test_wait_with_other_new_steps_waits_for_each() -> None:
    t = MemTables()
    apply(t, requested())
    emits = apply(t, report(1, wait_outcome(), Outcome(op=STEP_WAIT, step_id="b",
                                                       until_ms=5000,
                                                       wait={"event": "e"})))
    assert t.runs["R1"]["status"] == "running"
    assert len(of(emits, WaitRegistered)) == 2  # more in test_pending.py
