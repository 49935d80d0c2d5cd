"""The RocksDB database of one partition, and the state hash.

One database per ``runs`` partition (and one per ``waits`` partition, for the matcher)
holds every table of that partition, so one WriteBatch covers state changes and the
input offset atomically. The key layout is :mod:`engine.store.keys` (table in
docs/architecture.md, "State tables"); only this package reads the database handle.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgpack
from rocksdict import (
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteBufferManager,
)

from engine.runstate import TERMINAL, RunState
from engine.store import keys
from topics.codec import packb

# Decoded run states kept in memory per partition: a run's records usually arrive a few
# batches apart, and unpacking its state again cost ~23% of the engine's CPU under load.
STATE_CACHE_RUNS = 10_000


# Per database: a memtable this large is flushed to disk (see StateMemory.options).
MEMTABLE_FLUSH_MB = 4
# Memtables a database may hold, the live one and those waiting to be flushed.
MEMTABLES = 4


class StateMemory:
    """RocksDB memory shared by every partition database of one process.

    Each database alone would take RocksDB's default 64 MB of memtables and its own
    block cache; with a ``runs`` and a ``waits`` database per partition that kept a
    whole 100k-run state in memory (692 MB RSS, bench.holding). One write-buffer budget
    makes RocksDB flush to disk past it; one small block cache serves all reads.
    """

    def __init__(self, memtable_mb: int = 64, block_cache_mb: int = 16) -> None:
        self.memtable_mb = memtable_mb
        self.block_cache_mb = block_cache_mb
        self._manager = WriteBufferManager(memtable_mb << 20, False)
        self._table = BlockBasedOptions()
        self._table.set_block_cache(Cache(block_cache_mb << 20))

    def options(self) -> Options:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_manager(self._manager)
        # Reopening a database replays its write-ahead log, and rocksdict holds the GIL
        # while it does: about 7 ms per MB, so a 64 MB memtable's log (the default)
        # stalled the engine's API for up to 0.4 s after a kill -9. A small memtable
        # flushes (in RocksDB's own threads) before its log grows past that.
        opts.set_write_buffer_size(MEMTABLE_FLUSH_MB << 20)
        # Room for a big batch (thousands of states) while the last memtables flush:
        # with RocksDB's default of two, writes would stop until a flush is done.
        opts.set_max_write_buffer_number(MEMTABLES)
        opts.set_block_based_table_factory(self._table)
        return opts


_DEFAULT_MEMORY: StateMemory | None = None


def default_memory() -> StateMemory:
    global _DEFAULT_MEMORY
    if _DEFAULT_MEMORY is None:
        _DEFAULT_MEMORY = StateMemory()
    return _DEFAULT_MEMORY


def pack(state: Any) -> bytes:
    return packb(state)


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


_UNKNOWN = object()


class PartitionStore:
    """The tables of one ``runs`` partition, in a RocksDB directory of their own."""

    def __init__(self, path: Path, cache_runs: int = STATE_CACHE_RUNS,
                 memory: StateMemory | None = None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.cache: OrderedDict[str, RunState] = OrderedDict()
        self.cache_runs = cache_runs
        self.path = path
        self.db = Rdict(str(path), (memory or default_memory()).options())
        # Queries from the HTTP thread must not race a close on partition revoke.
        self.lock = threading.RLock()
        self.closed = False
        self._next_expiry: object = _UNKNOWN
        # Set while the partition's finished runs are loaded from ``history`` after a
        # restore from a snapshot: a run the store lacks may be one of them.
        self.history_pending = False

    def next_offset(self) -> int:
        return keys.parse_offset_value(self.db.get(keys.OFFSET_KEY))

    def get_run(self, run_id: str) -> RunState | None:
        """The stored state of a run (a fresh copy, safe to mutate)."""
        raw = self.db.get(keys.run_key(run_id))
        return unpack(raw) if raw is not None else None

    def cached_run(self, run_id: str) -> RunState | None:
        """The run's state for the fold: from the cache if there, else from RocksDB.

        The fold mutates it in place; :meth:`BatchView.commit` writes it and keeps it
        cached, and :meth:`evict` drops the states of a batch that was not committed.
        """
        state = self.cache.get(run_id)
        if state is not None:
            self.cache.move_to_end(run_id)
            return state
        return self.get_run(run_id)

    def remember(self, run_id: str, state: RunState) -> None:
        waiting = state.get("waiting")
        if waiting is None or waiting.get("kind") != "task":
            # Parked (sleeping, waiting) or ended: its next record is far off, and
            # decoding it once then is cheap. Caching it cost ~4 KB per parked run.
            self.cache.pop(run_id, None)
            return
        self.cache[run_id] = state
        self.cache.move_to_end(run_id)
        while len(self.cache) > self.cache_runs:
            self.cache.popitem(last=False)

    def evict(self, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            self.cache.pop(run_id, None)

    # Committed values, read as :class:`engine.flow.backlog.Reader` reads them: the API
    # asks a gate for its counts and a run for its place without a batch view.
    def get_value(self, key: bytes) -> Any:
        raw = self.db.get(key)
        return None if raw is None else unpack(raw)

    def scan_values(self, prefix: bytes, limit: int | None = None
                    ) -> list[tuple[bytes, Any]]:
        out: list[tuple[bytes, Any]] = []
        for key, raw in self.iterate(prefix):
            if limit is not None and len(out) >= limit:
                break
            out.append((key, unpack(raw)))
        return out

    def runs_for_event(self, event_id: str) -> list[str]:
        prefix = keys.event_runs_prefix(event_id)
        return [k[len(prefix):].decode() for k in self._keys(prefix)]

    def run_ids(self) -> Iterator[str]:
        for k in self._keys(keys.RUN):
            yield keys.parse_run_key(k)

    def due_timers(self, now_ms: int) -> list[tuple[int, str, str]]:
        """Every timer due at or before ``now_ms``, earliest first."""
        out = []
        it = self.db.iter()
        it.seek(keys.TIMER)
        while it.valid():
            key = it.key()
            if not keys.is_timer_key(key):
                break
            due, run_id, timer_id = keys.parse_timer_key(key)
            if due > now_ms:
                break
            out.append((due, run_id, timer_id))
            it.next()
        it.status()
        return out

    def next_due(self, after: int = -1) -> int | None:
        """The earliest due time of a timer due after ``after`` ms, if any."""
        it = self.db.iter()
        it.seek(keys.timers_from(after))
        if it.valid() and keys.is_timer_key(it.key()):
            return keys.parse_timer_key(it.key())[0]
        it.status()
        return None

    def scan(self, prefix: bytes, upto: bytes | None = None, start: bytes | None = None
             ) -> list[tuple[bytes, bytes]]:
        """Every (key, value) under ``prefix`` (from ``start`` and below ``upto``, if
        given), in order."""
        out = []
        it = self.db.iter()
        it.seek(start if start is not None and start > prefix else prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix) or (upto is not None and key >= upto):
                break
            out.append((key, it.value()))
            it.next()
        it.status()
        return out

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) under ``prefix`` in order, read as the caller goes: a
        caller that wants the first few of a long range (a backlog's head) reads those."""
        it = self.db.iter()
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                return
            yield key, it.value()
            it.next()
        it.status()

    def next_expiry(self) -> int | None:
        """The earliest expiry time in the expiry index, if any (cached)."""
        if self._next_expiry is _UNKNOWN:
            it = self.db.iter()
            it.seek(keys.EXPIRY)
            if not it.valid():
                it.status()
            self._next_expiry = (keys.parse_expiry_key(it.key())[0]
                                 if it.valid() and it.key().startswith(keys.EXPIRY) else None)
        return self._next_expiry  # type: ignore[return-value]

    def state_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every state entry (runs, timers, index), offsets excluded, in key order."""
        for prefix in keys.STATE_PREFIXES:
            it = self.db.iter()
            it.seek(prefix)
            while it.valid() and it.key().startswith(prefix):
                yield it.key(), it.value()
                it.next()
            it.status()

    def last_cron_tick(self, fn_id: str, cron: str) -> int | None:
        """The last tick fired for a function's cron trigger (None: none yet, or the
        store was closed as its partition was revoked)."""
        with self.lock:
            if self.closed:
                return None
            raw = self.db.get(keys.cron_key(fn_id, cron))
        return None if raw is None else int(unpack(raw))

    def runs_newest_first(self, before: str | None = None, chunk: int = 256
                          ) -> Iterator[tuple[str, bytes]]:
        """``(run id, packed state)`` of the runs with id < ``before`` (all if None),
        newest first (run ids are ULIDs). Holds the lock ``chunk`` keys at a time, so a
        partition revoke (which closes the store under it) can come in between; a store
        closed meanwhile ends the scan: its runs are no longer ours to answer for."""
        bound = keys.run_key(before) if before is not None else None
        while True:
            items: list[tuple[bytes, bytes]] = []
            exhausted = False
            with self.lock:
                if self.closed:
                    return
                it = self.db.iter()
                it.seek_for_prev(bound if bound is not None else keys.RUNS_END)
                while len(items) < chunk:
                    if not it.valid():
                        exhausted = True
                        break
                    key = it.key()
                    if not key.startswith(keys.RUN):
                        exhausted = True
                        break
                    if bound is None or key < bound:
                        items.append((key, it.value()))
                    it.prev()
            for key, raw in items:
                yield keys.parse_run_key(key), raw
            if exhausted or not items:
                return
            bound = items[-1][0]

    def forget_next_expiry(self) -> None:
        """The expiry index changed: :meth:`next_expiry` reads it again."""
        self._next_expiry = _UNKNOWN

    def verify(self) -> int:
        """Read every entry, so RocksDB checks every block's checksum; the count.

        Raises RocksDB's ``Corruption: ...`` error for a damaged block. Iterators that
        meet one stop early and say so only through ``status()``: every scan here
        checks it, so damage is never read as "no more keys".
        """
        n = 0
        opts = ReadOptions()
        opts.fill_cache(False)  # type: ignore[call-arg]  # the stub omits the flag
        it = self.db.iter(opts)  # a one-off read: keep the shared cache for the hot set
        it.seek_to_first()
        while it.valid():
            it.value()
            n += 1
            it.next()
        it.status()
        return n

    # --- bounded restore (engine/runtime/snapshot.py, history.py) -----------------

    def is_empty(self) -> bool:
        it = self.db.iter()
        it.seek_to_first()
        empty = not it.valid()
        it.status()
        return empty

    def live_entries(self) -> Iterator[tuple[bytes, bytes]]:
        """Every entry of the live state, for a snapshot: all keys but those that left
        it (:data:`keys.ARCHIVED_PREFIXES`), and the states of the runs not ended (the
        live-run index names them). Read from one RocksDB snapshot, so the entries are
        those of the last committed batch: call it from the thread that writes batches
        (rocksdict's snapshot iterators do not hold to their snapshot)."""
        it = self.db.iter()
        it.seek_to_first()
        while it.valid():
            key = it.key()
            skip = next((p for p in keys.ARCHIVED_PREFIXES if key.startswith(p)), None)
            if skip is not None:
                it.seek(skip[:-1] + bytes([skip[-1] + 1]))  # past the whole prefix
                continue
            yield key, it.value()
            if key.startswith(keys.LIVE):
                run_key = keys.run_key(keys.parse_live_key(key))
                state = self.db.get(run_key)
                if state is not None:
                    yield run_key, state
            it.next()
        it.status()

    def archived_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every entry that is not live state: ended runs' states, the event index."""
        for key, raw in self.iterate(keys.EVENT):
            yield key, raw
        for key, raw in self.iterate(keys.RUN):
            if unpack(raw).get("status") in TERMINAL:
                yield key, raw

    def index_live_runs(self) -> int:
        """Build the live-run index of a database written before it existed; the count."""
        batch = WriteBatch(raw_mode=True)
        n = 0
        for key, raw in self.iterate(keys.RUN):
            if unpack(raw).get("status") not in TERMINAL:
                batch.put(keys.live_key(keys.parse_run_key(key)), b"")
                n += 1
        self.db.write(batch)
        return n

    def put_entries(self, entries: Iterable[tuple[bytes, bytes]]) -> int:
        """Write raw entries (a snapshot's, history's) in one WriteBatch; the count."""
        batch = WriteBatch(raw_mode=True)
        n = 0
        for key, value in entries:
            batch.put(key, value)
            n += 1
        self.db.write(batch)
        self.forget_next_expiry()
        return n

    def write(self, batch: WriteBatch) -> None:
        self.db.write(batch)

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.db.close()

    def _keys(self, prefix: bytes) -> Iterator[bytes]:
        it = self.db.iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix):
            yield it.key()
            it.next()
        it.status()


def state_hash(stores: list[PartitionStore]) -> str:
    """SHA-256 over every state entry of the given partitions, in global key order.

    Offsets are left out, so a replay into a fresh directory hashes equal to the live
    engine's state for the same history regardless of how partitions were spread.
    """
    items: list[tuple[bytes, bytes]] = []
    for store in stores:
        with store.lock:
            if not store.closed:
                items.extend(store.state_items())
    items.sort()
    h = hashlib.sha256()
    for key, value in items:
        h.update(len(key).to_bytes(4, "big"))
        h.update(key)
        h.update(len(value).to_bytes(4, "big"))
        h.update(value)
    return h.hexdigest()

