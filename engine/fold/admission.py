"""Flow control at a run's start: rate limit, singleton and throttle decide whether a new
run starts now, waits, or is skipped. Pure, like every module of :mod:`engine.fold`.

They apply once, in this order, before the run's first task (which then claims its
concurrency slots, :mod:`engine.fold.flow`):

1. rate limit — over the limit, the run is ``skipped`` (nothing is queued);
2. singleton — another run of the key is active: ``skip`` skips this one, ``cancel``
   cancels that one and this one starts;
3. throttle — over the rate, the run is queued in the gate's backlog and the gate's timer
   starts it when GCRA allows (nothing is dropped).

Every gate of a run is on its partition (docs/architecture.md, "Flow control"), so each
decision is one table read and write in the fold step that applies ``run.requested``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.flow import throttle
from engine.fold.cancel import cancel
from engine.fold.core import Emit, RunState, Tables, note
from engine.fold.endings import finish, hand_over
from engine.fold.flow import run_rank
from engine.runstate import TERMINAL, WaitingThrottle
from engine.store import keys
from topics.records import TimerFired

# Gate timers are stored under this pseudo run id (a run id never has this form); the
# timer id is ``throttle:{gate}``.
GATE_TIMER_RUN = "~gate"
THROTTLE_TIMER = "throttle:"

Settle = Callable[[Tables, str, int], list[Emit]]


def admit(tables: Tables, state: RunState, now: int, settle: Settle) -> list[Emit]:
    """Start a new run through its gates: its first task, a place in a throttle's
    backlog, or a skip. ``settle`` releases the gates of a run this one cancels."""
    flow: dict[str, Any] = state.get("flow") or {}
    limit = flow.get("rate_limit")
    if limit is not None:
        decision = throttle.rate_limit(tables, str(limit["gate"]), now, int(limit["limit"]),
                                       int(limit["period_ms"]))
        if not decision.allowed:
            return skip(tables, state, now, {
                "name": "RateLimited",
                "message": f"rate limit of {limit['limit']} per {_span(limit['period_ms'])}"
                           f"{_of_key(limit.get('key'))} reached; the next run may start at "
                           f"{decision.next_ms} ms"})
    emits: list[Emit] = []
    single = flow.get("singleton")
    if single is not None:
        key = keys.gate_key("singleton", str(single["gate"]))
        held = tables.get_value(key)
        holder = tables.get_run(held["run"]) if held else None
        if holder is not None and holder["status"] not in TERMINAL:
            if single.get("mode") != "cancel":
                return skip(tables, state, now, {
                    "name": "SingletonSkipped",
                    "message": f"run {holder['run_id']} of the same singleton"
                               f"{_of_key(single.get('key'))} is in progress"})
            emits += cancel(tables, holder, {"kind": "singleton", "run_id": state["run_id"]},
                            now)
            tables.put_run(holder["run_id"], holder)
            emits += settle(tables, holder["run_id"], now)
        tables.put_value(key, {"run": state["run_id"]})
    gate = flow.get("throttle")
    if gate is not None:
        admission = throttle.admit(tables, str(gate["gate"]), state["run_id"],
                                   state["task_seq"], run_rank(state), now,
                                   int(gate["limit"]), int(gate["period_ms"]),
                                   int(gate.get("burst") or 1))
        if not admission.started:
            waiting: WaitingThrottle = {
                "kind": "throttle", "gate": str(gate["gate"]), "limit": int(gate["limit"]),
                "period": _span(int(gate["period_ms"])), "key": gate.get("key"), "since": now}
            state["waiting"] = waiting
            note(state, now, "throttle.queued", detail=_describe(gate))
            _remember(tables, gate, admission.timer_ms)
            return emits
    return emits + hand_over(tables, state, now)


def skip(tables: Tables, state: RunState, now: int, reason: dict[str, Any]) -> list[Emit]:
    """End a new run as ``skipped`` (flow control started none): the event keeps a run
    entry that says why."""
    state["status"] = "skipped"
    state["error"] = {**reason, "stack": ""}
    state["ended_at"] = now
    note(state, now, "run.skipped", detail=reason)
    return finish(tables, state, now)


def on_gate_timer(tables: Tables, rec: TimerFired) -> list[Emit]:
    """A throttle's timer fired: start the backlog's head while GCRA allows, and set the
    next timer if runs still wait."""
    if rec.ts < rec.due_ms:
        return []  # never early (a clock behind): the timer service fires it again
    tables.delete_timer(rec.due_ms, GATE_TIMER_RUN, rec.timer_id)
    if not rec.timer_id.startswith(THROTTLE_TIMER):
        return []
    gate = rec.timer_id[len(THROTTLE_TIMER):]
    key = keys.gate_key(throttle.KIND, gate)
    stored = tables.get_value(key)
    if stored is None or stored.get("timer_ms") != rec.due_ms or "cfg" not in stored:
        return []  # a timer that a later one replaced
    limit, period_ms, burst = stored["cfg"]
    started, next_ms = throttle.release_due(tables, gate, rec.ts, limit, period_ms, burst)
    _set_timer(tables, gate, next_ms)
    emits: list[Emit] = []
    for run_id, _seq in started:
        state = tables.get_run(run_id)
        waiting: Any = state.get("waiting") if state else None
        if (state is None or state["status"] in TERMINAL or not waiting
                or waiting.get("kind") != "throttle"):
            continue  # it ended while queued (a cancel): its start is simply used up
        state["waiting"] = None
        note(state, rec.ts, "throttle.released",
             detail={"gate": gate, "queued_ms": rec.ts - int(waiting["since"])})
        emits += hand_over(tables, state, rec.ts)
        tables.put_run(run_id, state)
    return emits


def _remember(tables: Tables, gate: dict[str, Any], timer_ms: int | None) -> None:
    """Keep the gate's config with its state, for its timer; set the timer if asked."""
    key = keys.gate_key(throttle.KIND, str(gate["gate"]))
    stored = tables.get_value(key)
    cfg = [int(gate["limit"]), int(gate["period_ms"]), int(gate.get("burst") or 1)]
    if stored is not None and stored.get("cfg") != cfg:
        stored["cfg"] = cfg
        tables.put_value(key, stored)
    if timer_ms is not None:
        _set_timer(tables, str(gate["gate"]), timer_ms)


def _set_timer(tables: Tables, gate: str, due: int | None) -> None:
    key = keys.gate_key(throttle.KIND, gate)
    stored = tables.get_value(key)
    if stored is None:
        return
    if due is None:
        stored.pop("timer_ms", None)
    else:
        stored["timer_ms"] = due
        tables.put_timer(due, GATE_TIMER_RUN, THROTTLE_TIMER + gate)
    tables.put_value(key, stored)


def _describe(gate: dict[str, Any]) -> dict[str, Any]:
    return {"gate": gate["gate"], "limit": gate["limit"], "period_ms": gate["period_ms"],
            "key": gate.get("key")}


def _of_key(key: object) -> str:
    return f" of key {key}" if key is not None else ""


def _span(ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
