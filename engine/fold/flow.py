"""Flow control in the run fold: a run claims its concurrency slots before a task goes
out, and gives them back when its code stops executing; an ended run leaves every gate.
Pure, like every module of :mod:`engine.fold`.

The gates (``state["flow"]``, evaluated by the router) all live on the run's partition
(docs/architecture.md, "Flow control"), so a claim is a table read and write in the same
fold step: exact, with no lock and no extra record. The slot accounting itself (holders,
the ordered backlog) is :mod:`engine.flow.slots`; the gates a run passes once, at its
start, are :mod:`engine.fold.admission`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.flow import slots, throttle
from engine.flow.rank import rank
from engine.fold.core import Emit, RunState, Tables, note
from engine.runstate import TERMINAL, WaitingSlot
from engine.store import keys

HandOver = Callable[[Tables, RunState, int], list[Emit]]


def gates(state: RunState) -> list[dict[str, Any]]:
    """The run's concurrency gates, in the order they are claimed (by gate key: two runs
    never wait for each other's gates in opposite orders)."""
    flow = state.get("flow")
    if not flow:
        return []
    return sorted(flow.get("concurrency") or (), key=lambda g: str(g["gate"]))


def run_rank(state: RunState) -> int:
    """The run's place in any backlog: accepted time, moved by its priority."""
    flow = state.get("flow") or {}
    return rank(state["requested_at"], int(flow.get("priority") or 0))


def acquire(tables: Tables, state: RunState, now: int) -> bool:
    """Claim every gate the run does not hold yet; True once it holds them all. Else the
    run joins the first full gate's backlog and waits (``waiting.kind == "slot"``): a
    release there grants it and dispatches it (:func:`settle`)."""
    held: list[str] = state.setdefault("slots", [])
    waiting: Any = state.get("waiting")
    queued_on = waiting.get("gate") if waiting and waiting.get("kind") == "slot" else None
    for gate in gates(state):
        key = str(gate["gate"])
        if key in held:
            continue
        if not slots.claim(tables, key, int(gate["limit"]), state["run_id"],
                           state["task_seq"], run_rank(state)):
            if queued_on != key:
                note(state, now, "slot.queued", detail=_describe(gate))
            slot: WaitingSlot = {"kind": "slot", "gate": key, "limit": int(gate["limit"]),
                                 "key": gate.get("key"), "since": now}
            state["waiting"] = slot
            return False
        held.append(key)
        if queued_on == key:
            note(state, now, "slot.granted",
                 detail={**_describe(gate), "queued_ms": now - int(waiting["since"])})
    return True


def _describe(gate: dict[str, Any]) -> dict[str, Any]:
    return {"gate": gate["gate"], "limit": gate["limit"], "key": gate.get("key")}


def _should_hold(state: RunState, gate: dict[str, Any]) -> bool:
    if state["status"] in TERMINAL:
        return False
    if gate.get("mode") == "run":
        return True
    # Step mode: while the run's code executes (a task is out), or while it waits for
    # another of its gates (slots are claimed in order and kept meanwhile).
    waiting: Any = state.get("waiting")
    return bool(waiting) and waiting.get("kind") in ("task", "slot")


def settle(tables: Tables, run_id: str, now: int, hand_over: HandOver) -> list[Emit]:
    """After a record was applied to run ``run_id``: give back the slots it no longer
    needs, take an ended run out of every backlog and its singleton, and dispatch the
    runs that get a slot."""
    state = tables.get_run(run_id)
    if state is None or not state.get("flow") or state.get("gates_left"):
        return []
    held: list[str] = state.get("slots") or []
    ended = state["status"] in TERMINAL
    by_key = {str(g["gate"]): g for g in gates(state)}
    release = [key for key in held if key not in by_key or not _should_hold(state, by_key[key])]
    if ended:
        # Also the gates it was queued for (an ended run has no ``waiting`` to say which).
        release += [key for key in by_key if key not in held]
        leave(tables, state)
        state["gates_left"] = True
    elif not release:
        return []
    state["slots"] = [key for key in held if key not in release]
    tables.put_run(run_id, state)
    emits: list[Emit] = []
    for key in release:
        emits.extend(_pass_on(tables, key, run_id, now, hand_over))
    return emits


def leave(tables: Tables, state: RunState) -> None:
    """An ended run leaves its throttle backlog (if it waited there) and its singleton."""
    flow: dict[str, Any] = state.get("flow") or {}
    gate = flow.get("throttle")
    if gate is not None:
        throttle.leave(tables, str(gate["gate"]), state["run_id"])
    single = flow.get("singleton")
    if single is not None:
        key = keys.gate_key("singleton", str(single["gate"]))
        held = tables.get_value(key)
        if held is not None and held["run"] == state["run_id"]:
            tables.delete_value(key)


def _pass_on(tables: Tables, key: str, run_id: str, now: int, hand_over: HandOver
             ) -> list[Emit]:
    """Release ``run_id``'s hold on (or place in) gate ``key`` and dispatch the runs it
    grants."""
    emits: list[Emit] = []
    pending = [run_id]
    while pending:
        for granted_id, _seq in slots.release(tables, key, pending.pop()):
            other = tables.get_run(granted_id)
            waiting: Any = other.get("waiting") if other else None
            if (other is None or other["status"] in TERMINAL or not waiting
                    or waiting.get("kind") != "slot" or waiting.get("gate") != key):
                # Nothing to dispatch (it ended, or no longer waits for this gate): the
                # slot goes straight back, to the next in line.
                pending.append(granted_id)
                continue
            emits.extend(hand_over(tables, other, now))
            tables.put_run(granted_id, other)
    return emits
