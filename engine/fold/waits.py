"""``wait.resolved`` and the waits a run registers (``step.wait_for_event`` and cancel
rules) and their timeouts. Pure, like every module of :mod:`engine.fold`."""

from __future__ import annotations

from typing import Any

from engine.fold import pending
from engine.fold.cancel import cancel
from engine.fold.core import (
    Emit,
    Limits,
    Position,
    RunState,
    Tables,
    field_path,
    note,
    value_at,
)
from engine.fold.endings import clear_wait, fail, hand_over, settle
from engine.runstate import TERMINAL, CancelWait, StepState, WaitingEvent
from topics.records import (
    Outcome,
    OutcomesReported,
    WaitRegistered,
    WaitResolved,
)


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
        ref: CancelWait = {"wait_id": wait_id, "event": name, "match_field": path,
                           "match_value": value}
        state.setdefault("cancel_waits", []).append(ref)
        emits.append(Emit("waits", name, WaitRegistered(
            wait_id=wait_id, run_id=state["run_id"], partition_key=state["partition_key"],
            kind="cancel", event=name, match_field=path, match_value=value,
            if_exp=rule.get("if_exp") or None, trigger=state["event"],
            expires_ms=now + int(timeout) if isinstance(timeout, int) else None, ts=now)))
    return emits


def begin_wait(tables: Tables, state: RunState, step: StepState, o: Outcome,
               rec: OutcomesReported, timer_id: str) -> tuple[WaitingEvent, list[Emit]]:
    """``step.wait``: register the wait with the matcher and arm its timeout
    (``timer_id``); the pause to keep (the caller puts it in ``waiting`` or in
    ``pending``)."""
    spec = o.wait or {}
    name = str(spec.get("event"))  # validate_outcomes checked it is a string
    until = int(o.until_ms or rec.ts)
    step_id = o.step_id or ""
    path = field_path(spec.get("match") if isinstance(spec.get("match"), str) else None)
    value = value_at(state["event"], path) if path else None
    wait_id = f"{state['run_id']}/{step_id}"
    step["status"] = "waiting"
    step["until_ms"] = until
    waiting: WaitingEvent = {"kind": "event", "step_id": step_id, "wait_id": wait_id,
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
        return waiting, []
    note(state, rec.ts, "wait.registered", step_id, detail=detail)
    return waiting, [Emit("waits", str(name), WaitRegistered(
        wait_id=wait_id, run_id=state["run_id"], partition_key=state["partition_key"],
        kind="step", event=str(name), match_field=path, match_value=value,
        if_exp=spec.get("if_exp") or None, trigger=state["event"], expires_ms=until,
        ts=rec.ts))]


def on_wait_resolved(tables: Tables, rec: WaitResolved, at: Position | None,
                     limits: Limits) -> list[Emit]:
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
    paused: WaitingEvent | None
    if waiting is not None and waiting["kind"] == "event" and waiting["wait_id"] == rec.wait_id:
        paused = waiting
    else:
        paused = pending.event_entry(state, rec.wait_id)
        if paused is None:
            return []  # timed out first, or a duplicate
    too_large = settle(tables, state, paused, rec.ts, output=rec.event,
                       ref=at.ref(0) if at else None)
    note(state, rec.ts, "wait.resolved", paused["step_id"],
         detail={"event_id": rec.event.get("id"), "event": rec.event.get("name")})
    if too_large:
        emits = fail(tables, state, too_large, rec.ts)
    elif paused is waiting:
        emits = hand_over(tables, state, rec.ts)
    else:
        emits = pending.resolved(tables, state, paused["step_id"], rec.ts)
    tables.put_run(rec.run_id, state)
    return emits


def wait_timed_out(tables: Tables, state: RunState, waiting: WaitingEvent,
                   now: int) -> list[Emit]:
    """``waiting`` (the run's one pause or a pending one) timed out: the step's value
    is None and the matcher forgets the wait. The caller hands the run on."""
    settle(tables, state, waiting, now, output=None)
    note(state, now, "wait.timed_out", waiting["step_id"],
         detail={"due_ms": waiting["due_ms"], "late_ms": now - waiting["due_ms"]})
    return [clear_wait(waiting, now)]
