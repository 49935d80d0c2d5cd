"""Several pauses at once: parallel lines waiting on events, child runs and timers side
by side. Pure, like every module of :mod:`engine.fold`.

A run whose task reports one pause (a wait, an invoke, or timers alone) keeps it in
``waiting``, as it always did. A task whose parallel lines stop on more than one thing
the engine must end (``step.wait_for_event``, ``step.invoke``, a sleep, a retry's
backoff) puts each in ``pending`` under its step id, and each resolves on its own: its
event, the child's end, its timer. The run waits (``waiting.kind == "steps"``) until one
resolves and is then handed over again, so the lines whose steps are now recorded go on
while the others stop again at their step still pending; the worker reports that step
again and the fold ignores it. A report whose execution completed a step next to a
pause (``progress``: that line can go on) hands the run over too; one that only repeats
pending steps leaves it waiting.

A retry's backoff holds every hand-over until it is due: the worker would otherwise run
the step again at once. :func:`engine.fold.endings.finish` clears what is still pending
when the run ends (timers deleted, waits cleared).
"""

from __future__ import annotations

from engine.fold.core import Emit, RunState, Tables
from engine.fold.endings import hand_over
from engine.runstate import Pending, WaitingEvent, WaitingInvoke, WaitingSteps, WaitingTimer


def several(state: RunState, pauses: int, timers: int, news: bool) -> bool:
    """Whether a report with ``pauses`` waits/invokes and ``timers`` sleeps/retries
    goes the several-at-once way: the run has pending steps already, or the report
    brings more than one thing to wait on with a wait or an invoke among them, or
    something to wait on while a line can go on (``news``). Else the run keeps its
    one pause in ``waiting`` (several timers: one, at the latest due time)."""
    if state.get("pending"):
        return True
    return (pauses > 0 and pauses + timers > 1) or (news and pauses + timers > 0)


def is_pending(state: RunState, step_id: str | None) -> bool:
    return step_id is not None and step_id in (state.get("pending") or {})


def add(state: RunState, key: str, entry: Pending) -> None:
    """Hold ``entry`` as the pause of step ``key`` ("" for a function-level retry)."""
    state.setdefault("pending", {})[key] = entry


def add_timer(tables: Tables, state: RunState, due: int, reason: str,
              step_id: str | None) -> None:
    """A sleep or a retry's backoff of one step, with a timer of its own."""
    key = step_id or ""
    timer_id = f"{reason}:{state['task_seq']}/{key}"
    entry: WaitingTimer = {"kind": "timer", "timer_id": timer_id, "due_ms": due,
                           "reason": reason, "step_id": step_id}
    add(state, key, entry)
    tables.put_timer(due, state["run_id"], timer_id)


def timer_id(state: RunState, op: str, step_id: str) -> str:
    """The timeout timer of pending wait or invoke ``step_id``: unique in the run."""
    return f"{op}:{state['task_seq']}/{step_id}"


def go_on(tables: Tables, state: RunState, now: int, news: bool) -> list[Emit]:
    """After a report: hand the run over if it has ``news`` (something recorded the
    worker has not seen) or nothing left pending; else wait for a pending step."""
    held = state.get("pending") or {}
    if not held:
        state.pop("pending", None)
        return hand_over(tables, state, now)
    if news and not _retry_held(held):
        return hand_over(tables, state, now)
    waiting: WaitingSteps = {"kind": "steps", "step_ids": list(held)}
    state["waiting"] = waiting
    return []


def resolved(tables: Tables, state: RunState, key: str, now: int) -> list[Emit]:
    """Pending step ``key`` ended (its outcome is recorded, or its retry is due)."""
    held = state.get("pending") or {}
    held.pop(key, None)
    waiting = state["waiting"]
    if waiting is not None and waiting["kind"] == "steps":
        return go_on(tables, state, now, news=True)
    if not held:
        state.pop("pending", None)
    if waiting is not None and waiting["kind"] == "task":
        # The worker executing the run now did not see it: go again after its report.
        state["woken"] = True
    # Queued for a flow-control slot: the task it gets will carry the outcome.
    return []


def event_entry(state: RunState, wait_id: str) -> WaitingEvent | None:
    for entry in (state.get("pending") or {}).values():
        if entry["kind"] == "event" and entry["wait_id"] == wait_id:
            return entry
    return None


def invoke_entry(state: RunState, step_id: str, child_run_id: str) -> WaitingInvoke | None:
    entry = (state.get("pending") or {}).get(step_id)
    if (entry is not None and entry["kind"] == "invoke"
            and entry["child_run_id"] == child_run_id):
        return entry
    return None


def timed(state: RunState, timer_id: str) -> tuple[str, Pending] | None:
    """The pending entry (and its key) whose timer is ``timer_id``."""
    for key, entry in (state.get("pending") or {}).items():
        if entry["timer_id"] == timer_id:
            return key, entry
    return None


def _retry_held(held: dict[str, Pending]) -> bool:
    return any(e["kind"] == "timer" and e["reason"] == "retry" for e in held.values())
