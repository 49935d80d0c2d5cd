"""A gate's backlog: the runs waiting for it, in rank order.

Entries are keys ``q/{kind}/{gate}{rank}{n}{run_id}`` (value: the run's task seq), so a
prefix scan reads them in (rank, n) order, where ``n`` is the gate's own counter: runs of
equal rank leave in the order they joined. Each queued run also has a place entry
``p/{kind}/{gate}{run_id}`` = ``[rank, n, seq]``, so finding or removing one run reads one
key, never the backlog. The gate's state map (kept by the caller, one table value) holds
the count ``queued`` and the counter ``n``; these functions update it in place and the
caller writes it back.

Pure: the tables are the only state (see :mod:`engine.flow`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from engine.store import keys

if TYPE_CHECKING:  # engine.fold will import engine.flow: no import cycle at run time
    from engine.fold.core import Tables


class Reader(Protocol):
    """The reads a backlog query needs (the fold's tables, or a read-only view)."""

    def get_value(self, key: bytes) -> Any: ...
    def scan_values(self, prefix: bytes, limit: int | None = None
                    ) -> list[tuple[bytes, Any]]: ...


@dataclass(frozen=True, slots=True)
class Place:
    """Where a queued run sits: its rank, the gate's counter when it joined, and the task
    seq it will be dispatched with."""

    rank: int
    n: int
    seq: int


def place(tables: Reader, kind: str, gate: str, run_id: str) -> Place | None:
    """The run's place in the backlog, or None if it is not queued there."""
    value = tables.get_value(keys.place_key(kind, gate, run_id))
    return None if value is None else Place(*value)


def enqueue(tables: Tables, kind: str, gate: str, state: dict[str, Any], run_id: str,
            seq: int, rank: int) -> None:
    """Queue the run behind every entry of lower or equal rank. The caller has checked
    it is not queued already (see :func:`place`)."""
    n = state.get("n", 0)
    state["n"] = n + 1
    state["queued"] = state.get("queued", 0) + 1
    tables.put_value(keys.backlog_key(kind, gate, rank, n, run_id), seq)
    tables.put_value(keys.place_key(kind, gate, run_id), [rank, n, seq])


def renew(tables: Tables, kind: str, gate: str, run_id: str, at: Place, seq: int) -> None:
    """Keep the run's place and dispatch it with task ``seq`` when it leaves."""
    tables.put_value(keys.backlog_key(kind, gate, at.rank, at.n, run_id), seq)
    tables.put_value(keys.place_key(kind, gate, run_id), [at.rank, at.n, seq])


def remove(tables: Tables, kind: str, gate: str, state: dict[str, Any], run_id: str,
           at: Place) -> None:
    """Take a queued run out of the backlog (cancelled, or ended, while waiting)."""
    tables.delete_value(keys.backlog_key(kind, gate, at.rank, at.n, run_id))
    tables.delete_value(keys.place_key(kind, gate, run_id))
    _count_out(state, 1)


def pop(tables: Tables, kind: str, gate: str, state: dict[str, Any], count: int
        ) -> list[tuple[str, int]]:
    """Take up to ``count`` runs off the head of the backlog: ``(run_id, task seq)``
    in backlog order."""
    if count <= 0 or not state.get("queued"):
        return []
    prefix = keys.backlog_prefix(kind, gate)
    out = []
    for key, seq in tables.scan_values(prefix, count):
        _, _, run_id = keys.parse_backlog_key(key, prefix)
        tables.delete_value(key)
        tables.delete_value(keys.place_key(kind, gate, run_id))
        out.append((run_id, seq))
    # Fewer than asked: the backlog is empty, whatever the count said.
    _count_out(state, len(out) if len(out) == count else state["queued"])
    return out


def ahead(tables: Reader, kind: str, gate: str, run_id: str) -> int:
    """How many queued runs leave before this one (0 if it is not queued). Reads the
    backlog up to the run: for the API, not for the fold."""
    at = place(tables, kind, gate, run_id)
    if at is None:
        return 0
    mine = keys.backlog_key(kind, gate, at.rank, at.n, run_id)
    return sum(1 for key, _ in tables.scan_values(keys.backlog_prefix(kind, gate))
               if key < mine)


def _count_out(state: dict[str, Any], k: int) -> None:
    state["queued"] = state.get("queued", 0) - k
    if state["queued"] <= 0:
        # Empty: the counter starts again, so it never grows past the longest backlog.
        state["queued"] = 0
        state["n"] = 0
