"""In-memory tables for the run fold (:class:`engine.fold.Tables`), for pure tests and
benchmarks: plain dicts and sets, values deep-copied as RocksDB would copy them."""

from __future__ import annotations

import copy
from typing import Any

import msgpack

from engine.runstate import RunState


class MemTables:
    """One partition's run tables in memory; :meth:`snapshot` gives comparable bytes."""

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}
        self.timers: set[tuple[int, str, str]] = set()
        self.index: set[tuple[str, str]] = set()
        self.values: dict[bytes, Any] = {}
        self.expiries: set[tuple[int, bytes]] = set()

    def get_run(self, run_id: str) -> RunState | None:
        return self.runs.get(run_id)

    def put_run(self, run_id: str, state: RunState) -> None:
        self.runs[run_id] = state

    def put_timer(self, due_ms: int, run_id: str, timer_id: str) -> None:
        self.timers.add((due_ms, run_id, timer_id))

    def delete_timer(self, due_ms: int, run_id: str, timer_id: str) -> None:
        self.timers.discard((due_ms, run_id, timer_id))

    def index_event(self, event_id: str, run_id: str) -> None:
        self.index.add((event_id, run_id))

    def get_value(self, key: bytes) -> Any:
        return copy.deepcopy(self.values.get(key))

    def put_value(self, key: bytes, value: Any, *, expires_ms: int | None = None) -> None:
        self.values[key] = copy.deepcopy(value)
        if expires_ms is not None:
            self.expiries.add((expires_ms, key))

    def scan_values(self, prefix: bytes, limit: int | None = None
                    ) -> list[tuple[bytes, Any]]:
        found = sorted(k for k in self.values if k.startswith(prefix))[:limit]
        return [(k, copy.deepcopy(self.values[k])) for k in found]

    def delete_value(self, key: bytes) -> None:
        self.values.pop(key, None)

    def expire(self, now_ms: int) -> list[bytes]:
        gone = sorted(x for x in self.expiries if x[0] < now_ms)
        for x in gone:
            self.expiries.discard(x)
            self.values.pop(x[1], None)
        return [k for _, k in gone]

    def snapshot(self) -> bytes:
        return msgpack.packb([sorted(self.runs.items()), sorted(self.timers),
                              sorted(self.index), sorted(self.values.items()),
                              sorted(self.expiries)])

    def clone(self) -> MemTables:
        return copy.deepcopy(self)
