"""The run fold's waits, invokes, cancellation, timeouts, dedupe and cron, without Kafka."""

from __future__ import annotations

from typing import Any

from engine.fold import Emit, apply
from tests.unit.memtables import MemTables
from topics.records import (
    DEDUPE_WINDOW_MS,
    FUNCTION_COMPLETED,
    FUNCTION_FAILED,
    STEP_INVOKE,
    STEP_WAIT,
    CancelRequested,
    Event,
    InvokeFinished,
    InvokeRequested,
    Outcome,
    OutcomesReported,
    RunRequested,
    RunStarted,
    Task,
    TimerFired,
    WaitCleared,
    WaitRegistered,
    WaitResolved,
)

TRIGGER = {"name": "billing/invoice.created", "data": {"invoice_id": 42}, "id": "E1",
           "ts": 1000}
PAID = {"name": "billing/invoice.paid", "data": {"invoice_id": 42}, "id": "E2", "ts": 3000}


def requested(run_id: str = "R1", ts: int = 1000, **kw: Any) -> RunRequested:
    kw.setdefault("dedupe_key", f"fn\x1fevent\x1f{run_id}")
    return RunRequested(run_id=run_id, fn_id="app-fn", app_id="app", partition_key="P",
                        event=TRIGGER, events=[TRIGGER], retries=2, backoff_base_ms=1000,
                        ts=ts, **kw)


def report(seq: int, *outcomes: Outcome, ts: int = 2000, run_id: str = "R1"
           ) -> OutcomesReported:
    return OutcomesReported(run_id=run_id, task_seq=seq, outcomes=list(outcomes),
                            worker="w", ts=ts)


def wait_outcome(until: int = 10_000, match: str | None = "data.invoice_id",
                 if_exp: str | None = None) -> Outcome:
    return Outcome(op=STEP_WAIT, step_id="paid", until_ms=until,
                   wait={"event": "billing/invoice.paid", "match": match, "if_exp": if_exp})


def of(emits: list[Emit], kind: type) -> list[Any]:
    return [e.record for e in emits if isinstance(e.record, kind)]


def waiting_run(t: MemTables) -> WaitRegistered:
    apply(t, requested())
    emits = apply(t, report(1, wait_outcome()))
    [reg] = of(emits, WaitRegistered)
    return reg


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


def test_invoke_waits_for_the_child_and_memoizes_its_output_or_error() -> None:
    t = MemTables()
    apply(t, requested())
    emits = apply(t, report(1, Outcome(op=STEP_INVOKE, step_id="child", until_ms=None,
                                       invoke={"function_id": "app-child",
                                               "data": {"n": 1}})))
    [req] = of(emits, InvokeRequested)
    assert req.fn_id == "app-child" and req.data == {"n": 1}
    assert req.parent == {"run_id": "R1", "partition_key": "P", "step_id": "child"}
    child = t.runs["R1"]["waiting"]["child_run_id"]
    # A report from another child, or for another step, is ignored.
    assert apply(t, InvokeFinished(run_id="R1", step_id="child", child_run_id="other",
                                   output=1, error=None, ts=3000)) == []
    emits = apply(t, InvokeFinished(run_id="R1", step_id="child", child_run_id=child,
                                    output={"sum": 3}, error=None, ts=3000))
    [task] = of(emits, Task)
    assert task.steps["child"] == {"data": {"sum": 3}}

    t2 = MemTables()
    apply(t2, requested())
    apply(t2, report(1, Outcome(op=STEP_INVOKE, step_id="child", until_ms=None,
                                invoke={"function_id": "app-child", "data": {}})))
    child = t2.runs["R1"]["waiting"]["child_run_id"]
    err = {"name": "ValueError", "message": "no", "stack": ""}
    [task] = of(apply(t2, InvokeFinished(run_id="R1", step_id="child", child_run_id=child,
                                         output=None, error=err, ts=3000)), Task)
    assert task.steps["child"] == {"error": err}


def test_invoke_timeout_fails_the_step() -> None:
    t = MemTables()
    apply(t, requested())
    apply(t, report(1, Outcome(op=STEP_INVOKE, step_id="child", until_ms=5000,
                               invoke={"function_id": "app-child", "data": {}})))
    [task] = of(apply(t, TimerFired(run_id="R1", timer_id="invoke:1", due_ms=5000,
                                    ts=5000)), Task)
    assert task.steps["child"]["error"]["name"] == "InvokeTimeoutError"


def test_a_child_reports_its_end_to_the_parent_partition() -> None:
    t = MemTables()
    parent = {"run_id": "PARENT", "partition_key": "PK", "step_id": "s"}
    apply(t, requested(parent=parent))
    emits = apply(t, report(1, Outcome(op=FUNCTION_FAILED, retriable=False,
                                       error={"name": "E", "message": "m", "stack": ""})))
    [done] = [e for e in emits if isinstance(e.record, InvokeFinished)]
    assert done.topic == "runs" and done.key == "PK"
    assert done.record.run_id == "PARENT" and done.record.error["name"] == "E"
    names = [e.name for e in of(emits, Event)]
    assert names == ["stepstream/function.finished", "stepstream/function.failed"]


def test_runs_of_lifecycle_events_emit_none_of_their_own() -> None:
    t = MemTables()
    apply(t, requested(lifecycle_events=False))
    emits = apply(t, report(1, Outcome(op=FUNCTION_COMPLETED, output=None)))
    assert of(emits, Event) == []


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


def test_same_dedupe_key_starts_one_run_per_window() -> None:
    t = MemTables()
    key = "app-fn\x1fevent\x1fE1"
    apply(t, requested("R1", dedupe_key=key, ts=1000))
    assert apply(t, requested("R2", dedupe_key=key, ts=2000)) == []
    assert apply(t, requested("R3", dedupe_key=key, ts=3000)) == []
    assert set(t.runs) == {"R1"}
    kinds = [e["type"] for e in t.runs["R1"]["timeline"]]
    assert kinds.count("run.deduplicated") == 2
    # After the window the key is free again (and was removed from the tables).
    later = 1000 + DEDUPE_WINDOW_MS + 1
    assert of(apply(t, requested("R4", dedupe_key=key, ts=later)), Task)
    assert set(t.runs) == {"R1", "R4"}


def test_cron_tick_fired_twice_or_older_starts_one_run() -> None:
    t = MemTables()
    cron = {"cron": "* * * * *", "tick_ms": 60_000}
    apply(t, requested("C1", cron=cron, dedupe_key=None))
    assert apply(t, requested("C1b", cron=cron, dedupe_key=None)) == []
    assert apply(t, requested("C0", cron={**cron, "tick_ms": 0}, dedupe_key=None)) == []
    [task] = of(apply(t, requested("C2", cron={**cron, "tick_ms": 120_000},
                                   dedupe_key=None)), Task)
    assert task.cron_tick_ms == 120_000
    assert set(t.runs) == {"C1", "C2"}


def test_wait_with_other_new_steps_fails_the_run() -> None:
    t = MemTables()
    apply(t, requested())
    emits = apply(t, report(1, wait_outcome(), Outcome(op=STEP_WAIT, step_id="b",
                                                       until_ms=5,
                                                       wait={"event": "e"})))
    assert t.runs["R1"]["status"] == "failed"
    assert t.runs["R1"]["error"]["name"] == "UnsupportedParallelWait"
    assert of(emits, WaitRegistered) == []


def test_a_first_report_overtaking_run_started_counts_as_the_start() -> None:
    t = MemTables()
    apply(t, requested(timeouts={"start_ms": 500, "finish_ms": None}))
    apply(t, report(1, Outcome(op=STEP_WAIT, step_id="w", until_ms=60_000,
                               wait={"event": "x"}), ts=1400))
    assert (1500, "R1", "deadline:start") not in t.timers
    apply(t, RunStarted(run_id="R1", task_seq=1, worker="w", ts=1450))  # late: ignored
    assert [e["type"] for e in t.runs["R1"]["timeline"]].count("run.started") == 1
    assert t.runs["R1"]["status"] == "running"
