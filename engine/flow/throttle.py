"""Throttle and rate-limit gates over the partition's tables (GCRA: :mod:`engine.flow.gcra`).

A throttle gate's state is ``g/throttle/{gate}`` = ``{"tat": [num, den], "queued", "n"}``
and its backlog is :mod:`engine.flow.backlog` (rank order, so FIFO unless a priority
moves a run). A start the gate refuses is queued, nothing is dropped; the caller sets a
gate timer at the time returned and calls :func:`release_due` when it fires. While the
backlog is not empty a newcomer queues behind it without asking GCRA, so starts keep the
backlog's order, and exactly one timer is pending: the one returned when the backlog
last became (or stayed) non-empty.

A rate-limit gate's state is ``g/rate_limit/{gate}`` = ``{"tat": [num, den]}``; a start
over the limit is skipped, nothing is queued.

The limit, period and burst are passed on every call (the function's registered
config): a change applies on the next call; the stored time carries over.

Pure: the tables are the only state (see :mod:`engine.flow`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.flow import backlog, gcra
from engine.store import keys

if TYPE_CHECKING:
    from engine.fold.core import Tables

KIND = "throttle"
RATE_LIMIT = "rate_limit"


@dataclass(frozen=True, slots=True)
class Admission:
    """A throttle's answer to one run: ``started`` now, or queued; ``timer_ms``: set a
    gate timer then (None: no new timer, one is pending or none is needed)."""

    started: bool
    timer_ms: int | None


def admit(tables: Tables, gate: str, run_id: str, seq: int, rank: int, now_ms: int,
          limit: int, period_ms: int, burst: int) -> Admission:
    """Ask the throttle to start the run (its task ``seq``, backlog ``rank``) at
    ``now_ms``. A run already queued here changes nothing."""
    key = keys.gate_key(KIND, gate)
    state: dict[str, Any] = tables.get_value(key) or {"queued": 0, "n": 0}
    if backlog.place(tables, KIND, gate, run_id) is not None:
        return Admission(False, None)
    if state["queued"]:
        backlog.enqueue(tables, KIND, gate, state, run_id, seq, rank)
        tables.put_value(key, state)
        return Admission(False, None)
    decision = gcra.throttle(state.get("tat"), now_ms, limit, period_ms, burst)
    if decision.allowed:
        state["tat"] = decision.state
        tables.put_value(key, state)
        return Admission(True, None)
    backlog.enqueue(tables, KIND, gate, state, run_id, seq, rank)
    tables.put_value(key, state)
    return Admission(False, decision.next_ms)


def release_due(tables: Tables, gate: str, now_ms: int, limit: int, period_ms: int,
                burst: int) -> tuple[list[tuple[str, int]], int | None]:
    """The gate's timer fired at ``now_ms``: start the backlog's head while GCRA allows.
    Returns the started ``(run_id, task seq)`` in order, and when to set the next gate
    timer (None: the backlog is empty)."""
    key = keys.gate_key(KIND, gate)
    state: dict[str, Any] | None = tables.get_value(key)
    if state is None or not state["queued"]:
        return [], None
    started: list[tuple[str, int]] = []
    while state["queued"]:
        decision = gcra.throttle(state.get("tat"), now_ms, limit, period_ms, burst)
        if not decision.allowed:
            tables.put_value(key, state)
            return started, decision.next_ms
        started += backlog.pop(tables, KIND, gate, state, 1)
        state["tat"] = decision.state
    tables.put_value(key, state)
    return started, None


def leave(tables: Tables, gate: str, run_id: str) -> bool:
    """Take a run out of the throttle's backlog (cancelled while it waited); whether it
    was there. The pending timer stays: when it fires it starts the next run, if any."""
    key = keys.gate_key(KIND, gate)
    at = backlog.place(tables, KIND, gate, run_id)
    state = tables.get_value(key)
    if at is None or state is None:
        return False
    backlog.remove(tables, KIND, gate, state, run_id, at)
    tables.put_value(key, state)
    return True


def rate_limit(tables: Tables, gate: str, now_ms: int, limit: int, period_ms: int
               ) -> gcra.Decision:
    """Ask the rate limit to start one run at ``now_ms``; a refused one is skipped
    (``allowed`` False), and nothing is stored for it."""
    key = keys.gate_key(RATE_LIMIT, gate)
    stored = tables.get_value(key)
    decision = gcra.rate_limit(None if stored is None else stored["tat"], now_ms, limit,
                               period_ms)
    if decision.allowed:
        tables.put_value(key, {"tat": decision.state})
    return decision
