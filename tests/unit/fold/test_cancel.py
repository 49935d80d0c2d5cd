"""The run fold's cancellation (API, cancel rules) and run timeouts, without Kafka."""

from __future__ import annotations

from engine.fold import apply
from tests.unit.fold.builders import PAID, of, report, requested
from tests.unit.memtables import MemTables
from topics.records import (
    FUNCTION_COMPLETED,
    STEP_WAIT,
    CancelRequested,
    Event,
    Outcome,
    RunStarted,
    Task,
    TimerFired,
    WaitCleared,
    WaitRegistered,
    WaitResolved,
)


def test_cancel_while_a_step_executes_ignores_its_outcome_and_says_who() -> None:
    t = MemTables()
    apply(t, requested())
    emits = apply(t, CancelRequested(run_id="R1", by={"kind": "api", "reason": "oops"},
                                     ts=1500))
    state = t.runs["R1"]
    assert state["status"] == "cancelled"
    assert state["cancelled_by"] == {"kind": "api", "reason": "oops"}
    names = [e.name for e in of(emits, Event)]
    assert names == ["stepstream/function.finished", "stepstream/function.cancelled"]
    # The step that was executing reports; the run does not resume.
    assert apply(t, report(1, Outcome(op=FUNCTION_COMPLETED, output=1))) == []
    assert t.runs["R1"]["status"] == "cancelled"
    assert apply(t, CancelRequested(run_id="R1", by={"kind": "api"}, ts=1600)) == []


def test_cancel_rules_register_waits_and_an_event_cancels() -> None:
    t = MemTables()
    rules = [{"event": "billing/invoice.voided", "match": "event.data.invoice_id",
              "if_exp": None, "timeout_ms": 60_000}]
    emits = apply(t, requested(cancel=rules))
    [reg] = of(emits, WaitRegistered)
    assert (reg.kind, reg.match_field, reg.match_value, reg.expires_ms) == (
        "cancel", "data.invoice_id", 42, 61_000)
    voided = {**PAID, "name": "billing/invoice.voided", "id": "E9"}
    emits = apply(t, WaitResolved(run_id="R1", wait_id=reg.wait_id, kind="cancel",
                                  event=voided, ts=2000))
    state = t.runs["R1"]
    assert state["status"] == "cancelled"
    assert state["cancelled_by"]["kind"] == "event"
    assert state["cancelled_by"]["event_id"] == "E9"
    # Ending clears the run's cancel waits.
    assert [c.wait_id for c in of(emits, WaitCleared)] == [reg.wait_id]


def test_completion_clears_cancel_waits() -> None:
    t = MemTables()
    rules = [{"event": "x/stop", "match": None, "if_exp": None, "timeout_ms": None}]
    apply(t, requested(cancel=rules))
    emits = apply(t, report(1, Outcome(op=FUNCTION_COMPLETED, output=None)))
    assert [c.wait_id for c in of(emits, WaitCleared)] == ["R1/cancel:0"]


def test_start_timeout_cancels_a_run_no_worker_started() -> None:
    t = MemTables()
    [task] = of(apply(t, requested(timeouts={"start_ms": 500, "finish_ms": None})), Task)
    assert task.report_start
    assert apply(t, TimerFired(run_id="R1", timer_id="deadline:start", due_ms=1500,
                               ts=1499)) == []  # never early
    apply(t, TimerFired(run_id="R1", timer_id="deadline:start", due_ms=1500, ts=1500))
    state = t.runs["R1"]
    assert state["status"] == "cancelled"
    assert state["cancelled_by"] == {"kind": "timeout", "which": "start", "limit_ms": 500}


def test_started_run_gets_a_finish_deadline_from_its_start() -> None:
    t = MemTables()
    apply(t, requested(timeouts={"start_ms": 500, "finish_ms": 2000}))
    apply(t, RunStarted(run_id="R1", task_seq=1, worker="w", ts=1200))
    assert t.timers == {(3200, "R1", "deadline:finish")}
    apply(t, TimerFired(run_id="R1", timer_id="deadline:start", due_ms=1500, ts=1500))
    assert t.runs["R1"]["status"] == "running"
    apply(t, TimerFired(run_id="R1", timer_id="deadline:finish", due_ms=3200, ts=3300))
    assert t.runs["R1"]["cancelled_by"]["which"] == "finish"
    assert not t.timers


def test_finish_deadline_without_start_timeout_counts_from_dispatch_and_is_removed() -> None:
    t = MemTables()
    apply(t, requested(timeouts={"start_ms": None, "finish_ms": 2000}))
    assert t.timers == {(3000, "R1", "deadline:finish")}
    apply(t, report(1, Outcome(op=FUNCTION_COMPLETED, output=None)))
    assert not t.timers


def test_a_first_report_overtaking_run_started_counts_as_the_start() -> None:
    t = MemTables()
    apply(t, requested(timeouts={"start_ms": 500, "finish_ms": None}))
    apply(t, report(1, Outcome(op=STEP_WAIT, step_id="w", until_ms=60_000,
                               wait={"event": "x"}), ts=1400))
    assert (1500, "R1", "deadline:start") not in t.timers
    apply(t, RunStarted(run_id="R1", task_seq=1, worker="w", ts=1450))  # late: ignored
    assert [e["type"] for e in t.runs["R1"]["timeline"]].count("run.started") == 1
    assert t.runs["R1"]["status"] == "running"
