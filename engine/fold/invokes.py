"""``invoke.finished``: a child run a step invoked reports its end; the invoke and its
timeout. Pure, like every module of :mod:`engine.fold`."""

from __future__ import annotations

from engine.fold import pending
from engine.fold.core import (
    Emit,
    Limits,
    Position,
    RunState,
    Tables,
    error_brief,
    note,
)
from engine.fold.endings import fail, hand_over, settle
from engine.runstate import TERMINAL, StepState, WaitingInvoke
from topics.ids import derived_ulid, run_id_for
from topics.records import (
    InvokeFinished,
    InvokeRequested,
    Outcome,
    OutcomesReported,
)


def begin_invoke(tables: Tables, state: RunState, step: StepState, o: Outcome,
                 rec: OutcomesReported, timer_id: str) -> tuple[WaitingInvoke, list[Emit]]:
    """``step.invoke``: ask the router for a child run and wait for its end, with a
    timeout (``timer_id``) if the step has one; the pause to keep (the caller puts it in
    ``waiting`` or in ``pending``)."""
    spec = o.invoke or {}
    fn_id = str(spec.get("function_id") or "")
    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    version = spec.get("v") if isinstance(spec.get("v"), str) else None
    step_id = o.step_id or ""
    event_id = derived_ulid(rec.ts, "invoke", state["run_id"], step_id)
    child = run_id_for(fn_id, event_id, rec.ts)
    step["status"] = "invoking"
    waiting: WaitingInvoke = {"kind": "invoke", "step_id": step_id, "child_run_id": child,
                              "function_id": fn_id, "timer_id": None, "due_ms": None}
    if o.until_ms is not None:
        waiting["timer_id"] = timer_id
        waiting["due_ms"] = int(o.until_ms)
        tables.put_timer(int(o.until_ms), state["run_id"], timer_id)
    note(state, rec.ts, "invoke.requested", step_id,
         detail={"function_id": fn_id, "child_run_id": child, "timeout_ms": o.until_ms})
    parent = {"run_id": state["run_id"], "partition_key": state["partition_key"],
              "step_id": step_id}
    return waiting, [Emit("events", event_id, InvokeRequested(fn_id=fn_id, data=data or {},
                                                     event_id=event_id, parent=parent,
                                                     ts=rec.ts, event_version=version))]


def on_invoke_finished(tables: Tables, rec: InvokeFinished, at: Position | None,
                       limits: Limits) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None or state["status"] in TERMINAL:
        return []
    waiting = state["waiting"]
    paused: WaitingInvoke | None
    if (waiting is not None and waiting["kind"] == "invoke"
            and waiting["step_id"] == rec.step_id
            and waiting["child_run_id"] == rec.child_run_id):
        paused = waiting
    else:
        paused = pending.invoke_entry(state, rec.step_id, rec.child_run_id)
        if paused is None:
            return []  # timed out first, or a duplicate
    too_large = settle(tables, state, paused, rec.ts, output=rec.output, error=rec.error,
                       ref=at.ref(0) if at else None)
    note(state, rec.ts, "invoke.finished", rec.step_id,
         detail={"child_run_id": rec.child_run_id, "ok": rec.error is None,
                 **error_brief(rec.error)})
    if too_large:
        emits = fail(tables, state, too_large, rec.ts)
    elif paused is waiting:
        emits = hand_over(tables, state, rec.ts)
    else:
        emits = pending.resolved(tables, state, rec.step_id, rec.ts)
    tables.put_run(rec.run_id, state)
    return emits


def invoke_timed_out(tables: Tables, state: RunState, waiting: WaitingInvoke,
                     now: int) -> None:
    """``waiting`` (the run's one pause or a pending one) timed out: the step fails
    with ``InvokeTimeoutError``. The caller hands the run on."""
    settle(tables, state, waiting, now, error={
        "name": "InvokeTimeoutError",
        "message": f"function {waiting['function_id']!r} (run {waiting['child_run_id']}) "
                   f"did not finish in time",
        "stack": ""})
    note(state, now, "invoke.timed_out", waiting["step_id"],
         detail={"child_run_id": waiting["child_run_id"]})
