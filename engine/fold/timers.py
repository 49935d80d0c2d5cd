"""``timer.fired`` and ``run.started``: retries and sleeps come due, waits and invokes
time out, and a run's start and finish deadlines are armed and passed.
Pure, like every module of :mod:`engine.fold`."""

from __future__ import annotations

from typing import cast

from engine.fold import batching, pending
from engine.fold.admission import GATE_TIMER_RUN, on_gate_timer
from engine.fold.cancel import cancel
from engine.fold.core import (
    Emit,
    Limits,
    NotApplicable,
    Position,
    RunState,
    Tables,
    note,
)
from engine.fold.endings import hand_over, recorded
from engine.fold.invokes import invoke_timed_out
from engine.fold.waits import wait_timed_out
from engine.runstate import TERMINAL, Pending, waiting_timer
from topics.records import (
    RunStarted,
    TimerFired,
)

START_DEADLINE = "deadline:start"


FINISH_DEADLINE = "deadline:finish"


def on_timer_fired(tables: Tables, rec: TimerFired, at: Position | None,
                   limits: Limits) -> list[Emit]:
    if rec.run_id == GATE_TIMER_RUN:
        if rec.timer_id.startswith((batching.BATCH_TIMER, batching.DEBOUNCE_TIMER)):
            if rec.ts < rec.due_ms:
                return []  # never early
            tables.delete_timer(rec.due_ms, GATE_TIMER_RUN, rec.timer_id)
            # Imported here: requested.py imports this module (deadlines).
            from engine.fold.requested import begin_run
            return batching.on_timer(tables, rec.timer_id, rec.due_ms, rec.ts, limits,
                                     begin_run)
        return on_gate_timer(tables, rec)
    state = tables.get_run(rec.run_id)
    if state is None:
        raise NotApplicable(f"timer for unknown run {rec.run_id}")
    if state["status"] in TERMINAL:
        return []
    deadlines = state.get("deadlines") or {}
    if rec.timer_id in deadlines:
        if rec.ts < deadlines[rec.timer_id]:
            return []  # never early (a clock behind); it fires again when due
        emits = deadline_passed(tables, state, rec.timer_id, rec.ts)
        tables.put_run(rec.run_id, state)
        return emits
    held = pending.timed(state, rec.timer_id)
    if held is not None:
        if rec.ts < (waiting_timer(held[1]) or (0, ""))[0]:
            return []  # never early, as below
        emits = _pending_timer(tables, state, held[0], held[1], rec.ts)
        tables.put_run(rec.run_id, state)
        return emits
    waiting = state["waiting"]
    timer = waiting_timer(waiting)
    if (waiting is None or waiting["kind"] == "task" or timer is None
            or timer[1] != rec.timer_id):
        return []  # fired before, or the run moved on
    due = timer[0]
    if rec.ts < due:
        # Written by a process whose clock is behind: never wake early. The timer stays
        # in the table and the timer service fires it again when it is due.
        return []
    if waiting["kind"] == "event":
        emits = [*wait_timed_out(tables, state, waiting, rec.ts),
                 *hand_over(tables, state, rec.ts)]
        tables.put_run(rec.run_id, state)
        return emits
    if waiting["kind"] == "invoke":
        invoke_timed_out(tables, state, waiting, rec.ts)
        emits = hand_over(tables, state, rec.ts)
        tables.put_run(rec.run_id, state)
        return emits
    tables.delete_timer(due, rec.run_id, rec.timer_id)
    note(state, rec.ts, "timer.fired", cast("str | None", waiting.get("step_id")),
         detail={"timer_id": rec.timer_id, "due_ms": due, "late_ms": rec.ts - due})
    for step_id, step in list(state["steps"].items()):
        until = step["until_ms"]
        if step["status"] == "sleeping" and until is not None and until <= rec.ts:
            step["status"] = "completed"
            step["output"] = None
            step["attempts"].append({"attempt": 0, "started_at": None, "ended_at": rec.ts,
                                     "error": None})
            recorded(state, step_id)
    emits = hand_over(tables, state, rec.ts)
    tables.put_run(rec.run_id, state)
    return emits


def _pending_timer(tables: Tables, state: RunState, key: str, entry: Pending,
                   now: int) -> list[Emit]:
    """The timer of one of the run's pending steps (pending.py) is due."""
    emits: list[Emit] = []
    if entry["kind"] == "event":
        emits = wait_timed_out(tables, state, entry, now)
    elif entry["kind"] == "invoke":
        invoke_timed_out(tables, state, entry, now)
    else:
        tables.delete_timer(entry["due_ms"], state["run_id"], entry["timer_id"])
        note(state, now, "timer.fired", entry["step_id"],
             detail={"timer_id": entry["timer_id"], "due_ms": entry["due_ms"],
                     "late_ms": now - entry["due_ms"]})
        step = state["steps"].get(key)
        if entry["reason"] == "sleep" and step is not None:
            step["status"] = "completed"
            step["output"] = None
            step["attempts"].append({"attempt": 0, "started_at": None, "ended_at": now,
                                     "error": None})
            recorded(state, key)
        # A retry's step stays "retrying": the next task carries its attempt count.
    return emits + pending.resolved(tables, state, key, now)


def arm_deadline(tables: Tables, state: RunState, timer_id: str, due: int) -> None:
    state.setdefault("deadlines", {})[timer_id] = due
    tables.put_timer(due, state["run_id"], timer_id)


def on_run_started(tables: Tables, rec: RunStarted, at: Position | None,
                   limits: Limits) -> list[Emit]:
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
