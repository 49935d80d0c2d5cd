"""Peer of the fold-rate benchmark: a faust-streaming agent with a RocksDB table.

Run as a child process by :mod:`bench.fold_rate`::

    python -m bench.faust_fold worker  (arguments come from BENCH_FAUST_* variables)

It consumes the same ``runs`` topic (same bytes) in its own consumer group, decodes
each record with ``topics.codec``, applies the same pure fold (``engine.fold.apply``)
against a small Tables adapter over a Faust table (``store="rocksdb://"``, which is
rocksdict in faust-streaming 0.11+), and sends the emitted tasks to a topic of its
own, as the engine produces them to ``tasks``. When it has applied every record it
writes its timings to a JSON file and the parent stops it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgpack

from bench.faust_common import make_app, run_worker, write_result
from engine import fold
from engine.store.keys import EVENT, RUN, expiry_key, timer_key
from topics.catalog import partition_for
from topics.codec import decode, encode

BROKER = os.environ["BENCH_FAUST_BROKER"]
SOURCE = os.environ["BENCH_FAUST_SOURCE"]
TASKS = os.environ["BENCH_FAUST_TASKS"]
PARTITIONS = int(os.environ["BENCH_FAUST_PARTITIONS"])
TOTAL = int(os.environ["BENCH_FAUST_TOTAL"])
RESULT = os.environ["BENCH_FAUST_RESULT"]
STORE = os.environ.get("BENCH_FAUST_STORE", "rocksdb://")

app = make_app(os.environ["BENCH_FAUST_APP_ID"], BROKER, Path(os.environ["BENCH_FAUST_DATADIR"]),
               PARTITIONS, int(os.environ.get("BENCH_FAUST_FETCH_WAIT_MS", "5")), store=STORE)
source = app.topic(SOURCE, key_type=bytes, value_type=bytes, key_serializer="raw",
                   value_serializer="raw", partitions=PARTITIONS)
tasks = app.topic(TASKS, key_type=bytes, value_type=bytes, key_serializer="raw",
                  value_serializer="raw", partitions=PARTITIONS)
table = app.Table("runstate", default=None, key_type=bytes, value_type=bytes,
                  partitions=PARTITIONS)


class FaustTables:
    """engine.fold.Tables over one Faust table (same keys and encoding as engine.state)."""

    def __init__(self) -> None:
        self.expiries: list[tuple[int, bytes]] = []
        self.next_expiry = 2**63

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        raw = table.get(RUN + run_id.encode())
        return msgpack.unpackb(raw, raw=False, strict_map_key=False) if raw else None

    def put_run(self, run_id: str, state: dict[str, Any]) -> None:
        table[RUN + run_id.encode()] = msgpack.packb(state, use_bin_type=True)

    def put_timer(self, due_ms: int, run_id: str, timer_id: str) -> None:
        table[timer_key(due_ms, run_id, timer_id)] = b"\x01"

    def delete_timer(self, due_ms: int, run_id: str, timer_id: str) -> None:
        table.pop(timer_key(due_ms, run_id, timer_id), None)

    def index_event(self, event_id: str, run_id: str) -> None:
        table[EVENT + f"{event_id}/{run_id}".encode()] = b"\x01"

    # Dedupe keys with an expiry, as engine.state keeps them: the value, an expiry index
    # entry, and (a Faust table has no ordered scan) the earliest expiry in memory.
    def get_value(self, key: bytes) -> Any:
        raw = table.get(key)
        return msgpack.unpackb(raw, raw=False, strict_map_key=False) if raw else None

    def put_value(self, key: bytes, value: Any, *, expires_ms: int | None = None) -> None:
        table[key] = msgpack.packb(value, use_bin_type=True)
        if expires_ms is not None:
            table[expiry_key(expires_ms, key)] = b"\x01"
            self.expiries.append((expires_ms, key))
            self.next_expiry = min(self.next_expiry, expires_ms)

    def expire(self, now_ms: int) -> list[bytes]:
        if now_ms <= self.next_expiry:
            return []
        gone = [k for due, k in self.expiries if due < now_ms]
        for due, k in self.expiries:
            if due < now_ms:
                table.pop(k, None)
                table.pop(expiry_key(due, k), None)
        self.expiries = [(d, k) for d, k in self.expiries if d >= now_ms]
        self.next_expiry = min((d for d, _ in self.expiries), default=2**63)
        return gone


tables = FaustTables()
started = time.time()
stats: dict[str, Any] = {"applied": 0, "first": None, "errors": 0, "cpu_first": 0.0}


def _driver() -> str:
    store = table.data
    if getattr(store, "use_rocksdict", False):
        return "rocksdict"
    return f"{type(store).__module__}.{type(store).__name__}"


@app.agent(source)
async def fold_runs(stream: Any) -> None:
    async for value in stream:
        if stats["first"] is None:
            stats["first"] = time.time()
            stats["cpu_first"] = time.process_time()
        try:
            rec = decode(value)
            emits = fold.apply(tables, rec)
        except Exception as exc:
            if not stats["errors"]:
                print("fold error:", repr(exc), flush=True)
            stats["errors"] += 1
            emits = []
        for e in emits:
            await tasks.send(key=e.key.encode(), value=encode(e.record),
                             partition=partition_for(e.key, PARTITIONS))
        stats["applied"] += 1
        if stats["applied"] == TOTAL:
            end = time.time()
            write_result(RESULT, {"first": stats["first"], "end": end, "started": started,
                                  "applied": stats["applied"], "errors": stats["errors"],
                                  "cpu_s": time.process_time() - stats["cpu_first"],
                                  "driver": _driver()})


if __name__ == "__main__":
    run_worker(app)
