"""``run.cancel``: a run is cancelled (by the API, a cancel rule's event, or a deadline).
Pure, like every module of :mod:`engine.fold`."""

from __future__ import annotations

from typing import Any

from engine.fold.core import (
    Emit,
    Limits,
    Position,
    RunState,
    Tables,
    note,
)
from engine.fold.endings import clear_wait, finish
from engine.runstate import TERMINAL, waiting_timer
from topics.records import CancelRequested, TaskCancelled


def on_run_cancel(tables: Tables, rec: CancelRequested, at: Position | None,
                  limits: Limits) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None or state["status"] in TERMINAL:
        return []
    emits = cancel(tables, state, dict(rec.by), rec.ts)
    tables.put_run(rec.run_id, state)
    return emits


def cancel(tables: Tables, state: RunState, by: dict[str, Any], now: int) -> list[Emit]:
    """End the run as cancelled. A step executing now may finish; its report finds the
    run ended and is ignored. The worker executing it is told (``task.cancelled``), so
    it does not run further steps ahead."""
    emits: list[Emit] = []
    waiting = state["waiting"]
    timer = waiting_timer(waiting)
    if timer is not None:
        tables.delete_timer(timer[0], state["run_id"], timer[1])
    if waiting is not None and waiting["kind"] == "event":
        emits.append(clear_wait(waiting, now))
    if waiting is not None and waiting["kind"] == "task":
        # A worker may be running this task ahead: it stops at its next step.
        emits.append(Emit("tasks", state["run_id"], TaskCancelled(
            run_id=state["run_id"], app_id=state["app_id"], task_seq=waiting["seq"], ts=now)))
    state["status"] = "cancelled"
    state["cancelled_by"] = by
    state["ended_at"] = now
    note(state, now, "run.cancelled", detail=by)
    return emits + finish(tables, state, now)
