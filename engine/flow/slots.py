"""Concurrency slots: at most ``limit`` runs hold a gate; the rest wait in rank order.

A gate's state is one table value at ``g/concurrency/{gate}``::

    {"limit": 5, "held": {run_id: task seq}, "queued": 12, "n": 40}

and its backlog is :mod:`engine.flow.backlog`. The rules, which make per-key order exact:

- a claim is granted iff fewer than ``limit`` hold the gate **and** nobody is queued: a
  newcomer never passes a queued run;
- a release frees the run's slot (or takes it out of the backlog) and grants the head of
  the backlog while fewer than ``limit`` hold it; the caller dispatches those runs;
- a run is never counted twice: a claim by a run that holds or is queued changes nothing
  but its task seq, and a release with an older task seq than the one recorded is a
  stale copy and changes nothing;
- the limit is the one of the latest claim (or :func:`set_limit`): a function
  re-registered with a new limit gets it on its next claim. A lower limit takes no slot
  back (a slot is never freed while the run's code may run); it only grants less.

An empty gate (no holder, no backlog) is deleted, so idle keys cost nothing. Pure: the
tables are the only state (see :mod:`engine.flow`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.flow import backlog
from engine.flow.backlog import Reader
from engine.store import keys

if TYPE_CHECKING:
    from engine.fold.core import Tables

KIND = "concurrency"


def claim(tables: Tables, gate: str, limit: int, run_id: str, seq: int, rank: int) -> bool:
    """Claim a slot of ``gate`` for the run's task ``seq``: True if the run holds one
    now, False if it waits in the backlog (at ``rank``, see :mod:`engine.flow.rank`)."""
    _check_limit(limit)
    key = keys.gate_key(KIND, gate)
    state = _load(tables, key)
    changed = state["limit"] != limit
    state["limit"] = limit
    held: dict[str, int] = state["held"]
    if run_id in held:
        granted = True
        if seq > held[run_id]:
            held[run_id] = seq
            changed = True
    elif (at := backlog.place(tables, KIND, gate, run_id)) is not None:
        granted = False
        if seq > at.seq:
            backlog.renew(tables, KIND, gate, run_id, at, seq)
    elif len(held) < limit and not state["queued"]:
        granted = changed = True
        held[run_id] = seq
    else:
        granted, changed = False, True
        backlog.enqueue(tables, KIND, gate, state, run_id, seq, rank)
    if changed:
        tables.put_value(key, state)
    return granted


def release(tables: Tables, gate: str, run_id: str, seq: int | None = None
            ) -> list[tuple[str, int]]:
    """Free the run's slot, or take it out of the backlog; grant the backlog's head while
    below the limit. Returns the granted ``(run_id, task seq)`` in backlog order: the
    caller dispatches them. ``seq`` (if given) is the task the release is for: an older
    one than the gate recorded is a stale copy, ignored."""
    key = keys.gate_key(KIND, gate)
    state = tables.get_value(key)
    if state is None:
        return []
    held: dict[str, int] = state["held"]
    if run_id in held:
        if seq is not None and seq < held[run_id]:
            return []
        del held[run_id]
    else:
        at = backlog.place(tables, KIND, gate, run_id)
        if at is None or (seq is not None and seq < at.seq):
            return []
        backlog.remove(tables, KIND, gate, state, run_id, at)
    return _grant(tables, gate, key, state)


def set_limit(tables: Tables, gate: str, limit: int) -> list[tuple[str, int]]:
    """Apply a new limit now (the function was re-registered): a higher one grants the
    backlog's head at once, returned as by :func:`release`. Without this call the new
    limit applies at the gate's next claim."""
    _check_limit(limit)
    key = keys.gate_key(KIND, gate)
    state = tables.get_value(key)
    if state is None or state["limit"] == limit:
        return []
    state["limit"] = limit
    return _grant(tables, gate, key, state)


def holds(tables: Reader, gate: str, run_id: str) -> bool:
    """Whether the run holds a slot of ``gate``."""
    state = tables.get_value(keys.gate_key(KIND, gate))
    return state is not None and run_id in state["held"]


def holders(tables: Reader, gate: str) -> int:
    """How many runs hold a slot of ``gate``."""
    state = tables.get_value(keys.gate_key(KIND, gate))
    return 0 if state is None else len(state["held"])


def queued(tables: Reader, gate: str) -> int:
    """How many runs wait in ``gate``'s backlog."""
    state = tables.get_value(keys.gate_key(KIND, gate))
    return 0 if state is None else int(state["queued"])


def limit_of(tables: Reader, gate: str) -> int | None:
    """The limit ``gate`` last applied (None: the gate is idle)."""
    state = tables.get_value(keys.gate_key(KIND, gate))
    return None if state is None else int(state["limit"])


def position(tables: Reader, gate: str, run_id: str) -> int:
    """How many queued runs are ahead of this one ("12 ahead"); 0 if it is not queued.
    Reads the backlog up to the run: for the API, not the fold."""
    return backlog.ahead(tables, KIND, gate, run_id)


def _grant(tables: Tables, gate: str, key: bytes, state: dict[str, Any]
           ) -> list[tuple[str, int]]:
    held: dict[str, int] = state["held"]
    granted = backlog.pop(tables, KIND, gate, state, state["limit"] - len(held))
    for run_id, seq in granted:
        held[run_id] = seq
    if held or state["queued"]:
        tables.put_value(key, state)
    else:
        tables.delete_value(key)
    return granted


def _load(tables: Tables, key: bytes) -> dict[str, Any]:
    state: dict[str, Any] | None = tables.get_value(key)
    return state if state is not None else {"limit": 0, "held": {}, "queued": 0, "n": 0}


def _check_limit(limit: int) -> None:
    # Validated when the function is registered; a gate with no slot would hold its
    # backlog for ever, so refuse it here too.
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"a concurrency limit is an integer >= 1, not {limit!r}")
