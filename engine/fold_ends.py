"""The run fold's waits, invokes, cancellation, deadlines and endings.

Every ending (completed, failed, cancelled) goes through :func:`finish`, which tidies
what the run left behind (deadline timers, cancel waits), tells a parent run that
invoked it, and emits the ``stepstream/function.*`` events.
"""

from __future__ import annotations

from typing import Any

from engine.fold_core import (
    TERMINAL,
    Emit,
    Position,
    RunState,
    Tables,
    build_task,
    error_brief,
    field_path,
    keep_value,
    note,
    over_state_limit,
    run_limit,
    value_at,
    value_size,
)
from topics.codec import encode
from topics.ids import derived_ulid, run_id_for
from topics.records import (
    FUNCTION_CANCELLED_EVENT,
    FUNCTION_FAILED_EVENT,
    FUNCTION_FINISHED,
    CancelRequested,
    Event,
    InvokeFinished,
    InvokeRequested,
    Outcome,
    OutcomesReported,
    RunStarted,
    WaitCleared,
    WaitRegistered,
    WaitResolved,
)

START_DEADLINE = "deadline:start"
FINISH_DEADLINE = "deadline:finish"


# --- registering waits -------------------------------------------------------------


def register_cancel_waits(state: RunState, now: int) -> list[Emit]:
    """One matcher wait per cancel rule of the run's function, from the run's start."""
    emits: list[Emit] = []
    for i, rule in enumerate(state.get("cancel") or []):
        name = rule.get("event")
        if not isinstance(name, str) or not name:
            continue
        path = field_path(rule.get("match"))
        value = value_at(state["event"], path) if path else None
        if path and value is None:
            note(state, now, "cancel.unmatchable",
                 detail={"event": name, "match": path,
                         "reason": "the triggering event has no value at the match field"})
            continue
        timeout = rule.get("timeout_ms")
        wait_id = f"{state['run_id']}/cancel:{i}"
        ref = {"wait_id": wait_id, "event": name, "match_field": path, "match_value": value}
        state.setdefault("cancel_waits", []).append(ref)
        emits.append(Emit("waits", name, WaitRegistered(
            wait_id=wait_id, run_id=state["run_id"], partition_key=state["partition_key"],
            kind="cancel", event=name, match_field=path, match_value=value,
            if_exp=rule.get("if_exp") or None, trigger=state["event"],
            expires_ms=now + int(timeout) if isinstance(timeout, int) else None, ts=now)))
    return emits


def begin_wait(tables: Tables, state: RunState, step: dict[str, Any], o: Outcome,
               rec: OutcomesReported) -> list[Emit]:
    """``step.wait``: register the wait with the matcher and arm its timeout."""
    spec = o.wait or {}
    name = spec.get("event")
    until = int(o.until_ms or rec.ts)
    step_id = o.step_id or ""
    path = field_path(spec.get("match") if isinstance(spec.get("match"), str) else None)
    value = value_at(state["event"], path) if path else None
    wait_id = f"{state['run_id']}/{step_id}"
    timer_id = f"wait:{state['task_seq']}"
    step["status"] = "waiting"
    step["until_ms"] = until
    state["waiting"] = {"kind": "event", "step_id": step_id, "wait_id": wait_id,
                        "event": name, "match_field": path, "match_value": value,
                        "timer_id": timer_id, "due_ms": until}
    tables.put_timer(until, state["run_id"], timer_id)
    detail: dict[str, Any] = {"event": name, "timeout_ms": until}
    if path:
        detail["match"] = {path: value}
    if spec.get("if_exp"):
        detail["if_exp"] = spec["if_exp"]
    if path and value is None:
        # Nothing can equal a missing value: the wait can only time out.
        detail["unmatchable"] = "the triggering event has no value at the match field"
        note(state, rec.ts, "wait.registered", step_id, detail=detail)
        return []
    note(state, rec.ts, "wait.registered", step_id, detail=detail)
    return [Emit("waits", str(name), WaitRegistered(
        wait_id=wait_id, run_id=state["run_id"], partition_key=state["partition_key"],
        kind="step", event=str(name), match_field=path, match_value=value,
        if_exp=spec.get("if_exp") or None, trigger=state["event"], expires_ms=until,
        ts=rec.ts))]


def begin_invoke(tables: Tables, state: RunState, step: dict[str, Any], o: Outcome,
                 rec: OutcomesReported) -> list[Emit]:
    """``step.invoke``: ask the router for a child run and wait for its end."""
    spec = o.invoke or {}
    fn_id = str(spec.get("function_id") or "")
    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    step_id = o.step_id or ""
    event_id = derived_ulid(rec.ts, "invoke", state["run_id"], step_id)
    child = run_id_for(fn_id, event_id, rec.ts)
    step["status"] = "invoking"
    waiting: dict[str, Any] = {"kind": "invoke", "step_id": step_id, "child_run_id": child,
                               "function_id": fn_id, "timer_id": None, "due_ms": None}
    if o.until_ms is not None:
        waiting["timer_id"] = f"invoke:{state['task_seq']}"
        waiting["due_ms"] = int(o.until_ms)
        tables.put_timer(int(o.until_ms), state["run_id"], waiting["timer_id"])
    state["waiting"] = waiting
    note(state, rec.ts, "invoke.requested", step_id,
         detail={"function_id": fn_id, "child_run_id": child, "timeout_ms": o.until_ms})
    parent = {"run_id": state["run_id"], "partition_key": state["partition_key"],
              "step_id": step_id}
    return [Emit("events", event_id, InvokeRequested(fn_id=fn_id, data=data or {},
                                                     event_id=event_id, parent=parent,
                                                     ts=rec.ts))]


# --- resolving waits ---------------------------------------------------------------


def wait_resolved(tables: Tables, rec: WaitResolved, at: Position | None = None
                  ) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None or state["status"] in TERMINAL:
        return []  # the run ended first; the matcher's answer comes too late
    if rec.kind == "cancel":
        by = {"kind": "event", "event": rec.event.get("name"), "event_id": rec.event.get("id"),
              "wait_id": rec.wait_id}
        emits = cancel(tables, state, by, rec.ts)
        tables.put_run(rec.run_id, state)
        return emits
    waiting = state["waiting"]
    if waiting is None or waiting["kind"] != "event" or waiting["wait_id"] != rec.wait_id:
        return []  # timed out first, or a duplicate
    too_large = _settle(tables, state, rec.ts, output=rec.event, ref=at.ref(0) if at else None)
    note(state, rec.ts, "wait.resolved", waiting["step_id"],
         detail={"event_id": rec.event.get("id"), "event": rec.event.get("name")})
    emits = (fail(tables, state, too_large, rec.ts) if too_large
             else hand_over(tables, state, rec.ts))
    tables.put_run(rec.run_id, state)
    return emits


def wait_timed_out(tables: Tables, state: RunState, now: int) -> list[Emit]:
    waiting = state["waiting"]
    _settle(tables, state, now, output=None)
    note(state, now, "wait.timed_out", waiting["step_id"],
         detail={"due_ms": waiting["due_ms"], "late_ms": now - waiting["due_ms"]})
    return [_clear(waiting, now), *hand_over(tables, state, now)]


def invoke_finished(tables: Tables, rec: InvokeFinished, at: Position | None = None
                    ) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None or state["status"] in TERMINAL:
        return []
    waiting = state["waiting"]
    if (waiting is None or waiting["kind"] != "invoke" or waiting["step_id"] != rec.step_id
            or waiting["child_run_id"] != rec.child_run_id):
        return []  # timed out first, or a duplicate
    too_large = _settle(tables, state, rec.ts, output=rec.output, error=rec.error,
                        ref=at.ref(0) if at else None)
    note(state, rec.ts, "invoke.finished", rec.step_id,
         detail={"child_run_id": rec.child_run_id, "ok": rec.error is None,
                 **error_brief(rec.error)})
    emits = (fail(tables, state, too_large, rec.ts) if too_large
             else hand_over(tables, state, rec.ts))
    tables.put_run(rec.run_id, state)
    return emits


def invoke_timed_out(tables: Tables, state: RunState, now: int) -> list[Emit]:
    waiting = state["waiting"]
    _settle(tables, state, now, error={
        "name": "InvokeTimeoutError",
        "message": f"function {waiting['function_id']!r} (run {waiting['child_run_id']}) "
                   f"did not finish in time",
        "stack": ""})
    note(state, now, "invoke.timed_out", waiting["step_id"],
         detail={"child_run_id": waiting["child_run_id"]})
    return hand_over(tables, state, now)


def _settle(tables: Tables, state: RunState, now: int, *, output: Any = None,
            error: dict[str, Any] | None = None, ref: list[int] | None = None
            ) -> dict[str, Any] | None:
    """End the step the run is paused on (a wait or an invoke): completed with
    ``output``, or failed with ``error``; its timeout timer goes. ``ref`` says where the
    value was recorded. Returns the run's error if the output would take its state over
    the limit (the step is then failed with it)."""
    waiting: dict[str, Any] = state["waiting"]
    if waiting.get("timer_id"):
        tables.delete_timer(waiting["due_ms"], state["run_id"], waiting["timer_id"])
    step = state["steps"][waiting["step_id"]]
    size = value_size(output if error is None else error)
    too_large = (over_state_limit(state, size, f"step {waiting['step_id']!r} output")
                 if error is None and output is not None else None)
    if too_large is not None:
        error, size, ref = too_large, value_size(too_large), None
    step["attempts"].append({"attempt": 0, "started_at": None, "ended_at": now,
                             "error": error})
    if error is None:
        step["status"] = "completed"
        step["output"] = output
    else:
        step["status"] = "failed"
        step["error"] = error
    keep_value(step, size, ref)
    return too_large


def hand_over(tables: Tables, state: RunState, now: int) -> list[Emit]:
    """Dispatch the run's next task, or fail the run if that task would be larger than
    a worker accepts (it would be dropped there, and the run would hang)."""
    limit = run_limit(state, "task_bytes")
    emit, bound = build_task(state, now, limit)
    if bound <= limit:
        return [emit]  # surely fits: no need to encode it here as well
    size = len(encode(emit.record))
    if size <= limit:
        return [emit]
    state["timeline"].pop()  # the task.dispatched just noted: it is never sent
    return fail(tables, state, {
        "name": "TaskTooLarge",
        "message": f"the run's next task would be {size} bytes, over the {limit}-byte record "
                   "limit (STEPSTREAM_MAX_RECORD_BYTES): its events and the step outputs and "
                   "errors it must carry inline do not fit",
        "stack": ""}, now)


def fail(tables: Tables, state: RunState, error: dict[str, Any], now: int) -> list[Emit]:
    """End the run as failed with ``error`` (not retried: retrying cannot change it)."""
    state["status"] = "failed"
    state["error"] = error
    state["ended_at"] = now
    note(state, now, "run.failed", attempt=state["attempt"], detail=error_brief(error))
    return finish(tables, state, now)


# --- starting, deadlines, cancelling ------------------------------------------------


def arm_deadline(tables: Tables, state: RunState, timer_id: str, due: int) -> None:
    state.setdefault("deadlines", {})[timer_id] = due
    tables.put_timer(due, state["run_id"], timer_id)


def run_started(tables: Tables, rec: RunStarted) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None or state["status"] in TERMINAL or state.get("worker_started"):
        return []  # ended, or started already (a late or repeated run.started)
    mark_started(tables, state, rec.ts, rec.worker)
    tables.put_run(rec.run_id, state)
    return []


def mark_started(tables: Tables, state: RunState, now: int, worker: str) -> None:
    """A worker began the run: the start deadline is met and the finish one begins.
    Called for ``run.started``, and for a first report that overtook it."""
    state["worker_started"] = now
    deadlines = state.get("deadlines") or {}
    if START_DEADLINE in deadlines:
        tables.delete_timer(deadlines.pop(START_DEADLINE), state["run_id"], START_DEADLINE)
    finish_ms = (state.get("timeouts") or {}).get("finish_ms")
    if isinstance(finish_ms, int):
        arm_deadline(tables, state, FINISH_DEADLINE, now + finish_ms)
    note(state, now, "run.started", detail={"worker": worker})


def deadline_passed(tables: Tables, state: RunState, timer_id: str, now: int) -> list[Emit]:
    due = state["deadlines"].pop(timer_id)
    tables.delete_timer(due, state["run_id"], timer_id)
    which = "start" if timer_id == START_DEADLINE else "finish"
    limit = (state.get("timeouts") or {}).get(f"{which}_ms")
    return cancel(tables, state, {"kind": "timeout", "which": which, "limit_ms": limit}, now)


def cancel_requested(tables: Tables, rec: CancelRequested) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None or state["status"] in TERMINAL:
        return []
    emits = cancel(tables, state, dict(rec.by), rec.ts)
    tables.put_run(rec.run_id, state)
    return emits


def cancel(tables: Tables, state: RunState, by: dict[str, Any], now: int) -> list[Emit]:
    """End the run as cancelled. A step executing now may finish; its report finds the
    run ended and is ignored."""
    emits: list[Emit] = []
    waiting = state["waiting"]
    if waiting is not None and waiting.get("timer_id") and waiting.get("due_ms") is not None:
        tables.delete_timer(waiting["due_ms"], state["run_id"], waiting["timer_id"])
    if waiting is not None and waiting["kind"] == "event":
        emits.append(_clear(waiting, now))
    state["status"] = "cancelled"
    state["cancelled_by"] = by
    state["ended_at"] = now
    note(state, now, "run.cancelled", detail=by)
    return emits + finish(tables, state, now)


# --- endings -----------------------------------------------------------------------


def finish(tables: Tables, state: RunState, now: int) -> list[Emit]:
    """What every ending does; ``state['status']`` is already terminal."""
    state["waiting"] = None
    for timer_id, due in (state.get("deadlines") or {}).items():
        tables.delete_timer(due, state["run_id"], timer_id)
    state["deadlines"] = {}
    emits = [_clear(ref, now) for ref in state.get("cancel_waits") or []]
    state["cancel_waits"] = []
    status = state["status"]
    error = state["error"]
    if status == "cancelled":
        error = {"name": "RunCancelled",
                 "message": f"run {state['run_id']} was cancelled: {state['cancelled_by']}",
                 "stack": ""}
    parent = state.get("parent")
    if parent:
        emits.append(Emit("runs", parent["partition_key"], InvokeFinished(
            run_id=parent["run_id"], step_id=parent["step_id"], child_run_id=state["run_id"],
            output=state["output"] if status == "completed" else None,
            error=None if status == "completed" else error, ts=now)))
    if state.get("lifecycle_events", True):
        data: dict[str, Any] = {"function_id": state["fn_id"], "run_id": state["run_id"],
                                "status": status, "event": state["event"]}
        if status == "completed":
            data["output"] = state["output"]
        else:
            data["error"] = error
        emits.append(_event(FUNCTION_FINISHED, data, state["run_id"], now))
        if status == "failed":
            emits.append(_event(FUNCTION_FAILED_EVENT, data, state["run_id"], now))
        elif status == "cancelled":
            emits.append(_event(FUNCTION_CANCELLED_EVENT, data, state["run_id"], now))
    return emits


def _event(name: str, data: dict[str, Any], run_id: str, now: int) -> Emit:
    # The id derives from the run, so a re-emitted ending sends the same event and its
    # runs dedupe.
    event_id = derived_ulid(now, name, run_id)
    return Emit("events", event_id, Event(name=name, data=data, id=event_id, ts=now))


def _clear(ref: dict[str, Any], now: int) -> Emit:
    return Emit("waits", str(ref["event"]), WaitCleared(
        wait_id=ref["wait_id"], event=str(ref["event"]), match_field=ref.get("match_field"),
        match_value=ref.get("match_value"), ts=now))
