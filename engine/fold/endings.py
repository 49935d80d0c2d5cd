"""How a run ends, and how it goes on.

Every ending (completed, failed, cancelled) goes through :func:`finish`, which tidies
what the run left behind (deadline timers, cancel waits), tells a parent run that
invoked it, and emits the ``stepstream/function.*`` events. :func:`hand_over` sends a
run that goes on its next task. Pure, like every module of :mod:`engine.fold`."""

from __future__ import annotations

from typing import Any

from engine.fold import flow
from engine.fold.core import (
    Emit,
    RunState,
    Tables,
    build_task,
    error_brief,
    keep_value,
    note,
    over_state_limit,
    run_limit,
    value_size,
)
from engine.runstate import CancelWait, WaitingEvent, WaitingInvoke, waiting_timer
from topics.codec import encode
from topics.ids import derived_ulid
from topics.records import (
    FUNCTION_CANCELLED_EVENT,
    FUNCTION_FAILED_EVENT,
    FUNCTION_FINISHED,
    Event,
    InvokeFinished,
    WaitCleared,
)


def settle(tables: Tables, state: RunState, waiting: WaitingEvent | WaitingInvoke, now: int,
           *, output: Any = None, error: dict[str, Any] | None = None,
           ref: list[int] | None = None) -> dict[str, Any] | None:
    """End the step the run is paused on (``waiting``: a wait or an invoke, the run's one
    pause or one of its pending ones): completed with ``output``, or failed with
    ``error``; its timeout timer goes. ``ref`` says where the value was recorded.
    Returns the run's error if the output would take its state over the limit (the step
    is then failed with it)."""
    timer = waiting_timer(waiting)
    if timer is not None:
        tables.delete_timer(timer[0], state["run_id"], timer[1])
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
    recorded(state, waiting["step_id"])
    return too_large


def hand_over(tables: Tables, state: RunState, now: int) -> list[Emit]:
    """Dispatch the run's next task, or fail the run if that task would be larger than
    a worker accepts (it would be dropped there, and the run would hang). A run with
    concurrency gates first claims its slots; without one it queues (flow.py)."""
    if state.get("flow") and not flow.acquire(tables, state, now):
        return []
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


def finish(tables: Tables, state: RunState, now: int) -> list[Emit]:
    """What every ending does; ``state['status']`` is already terminal."""
    state["waiting"] = None
    for timer_id, due in (state.get("deadlines") or {}).items():
        tables.delete_timer(due, state["run_id"], timer_id)
    state["deadlines"] = {}
    emits = [clear_wait(ref, now) for ref in state.get("cancel_waits") or []]
    state["cancel_waits"] = []
    emits.extend(_clear_pending(tables, state, now))
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
    if state.get("lifecycle_events", True) and status != "skipped":
        # A skipped run (flow control) never started: like Inngest, no function.* event.
        data: dict[str, Any] = {"function_id": state["fn_id"], "run_id": state["run_id"],
                                "status": status, "event": state["event"]}
        if status == "completed":
            data["output"] = state["output"]
        else:
            data["error"] = error
        if status == "cancelled":
            data["cancelled_by"] = state["cancelled_by"]
        emits.append(lifecycle_event(FUNCTION_FINISHED, data, state["run_id"], now))
        if status == "failed":
            emits.append(lifecycle_event(FUNCTION_FAILED_EVENT, data, state["run_id"], now))
        elif status == "cancelled":
            emits.append(lifecycle_event(FUNCTION_CANCELLED_EVENT, data, state["run_id"], now))
    return emits


def _clear_pending(tables: Tables, state: RunState, now: int) -> list[Emit]:
    """Drop the pauses still pending when the run ends (a RACE's losers, or every one
    when the run is cancelled): their timers go and their waits are cleared. Invoked
    child runs go on; their ends find the run ended and are ignored."""
    emits: list[Emit] = []
    for entry in (state.pop("pending", None) or {}).values():
        timer = waiting_timer(entry)
        if timer is not None:
            tables.delete_timer(timer[0], state["run_id"], timer[1])
        if entry["kind"] == "event":
            emits.append(clear_wait(entry, now))
    state.pop("woken", None)
    return emits


def recorded(state: RunState, step_id: str) -> None:
    """Step ``step_id`` was just completed or failed for good: move it to the end of the
    run's steps, which are thus in the order their outcomes were recorded. Tasks carry
    them in that order, and a RACE group's winner is the line recorded first."""
    steps = state["steps"]
    if step_id in steps:
        steps[step_id] = steps.pop(step_id)


def lifecycle_event(name: str, data: dict[str, Any], run_id: str, now: int) -> Emit:
    # The id derives from the run, so a re-emitted ending sends the same event and its
    # runs dedupe.
    event_id = derived_ulid(now, name, run_id)
    return Emit("events", event_id, Event(name=name, data=data, id=event_id, ts=now))


def clear_wait(ref: CancelWait | WaitingEvent, now: int) -> Emit:
    return Emit("waits", str(ref["event"]), WaitCleared(
        wait_id=ref["wait_id"], event=str(ref["event"]), match_field=ref.get("match_field"),
        match_value=ref.get("match_value"), ts=now))
