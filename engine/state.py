"""State tables in RocksDB: one database per ``runs`` partition.

Key layout (all tables of a partition share one database so one WriteBatch covers
state changes and the input offset atomically):

=================================  ===========================================
``r/{run_id}``                     run state (msgpack map, see docs/architecture.md)
``t/{due_ms:8 bytes BE}{run_id}/{timer_id}``  pending timer (empty value)
``e/{event_id}/{run_id}``          event -> runs index (empty value)
``i/{dedupe_key}``                 the run that holds a dedupe key, until it expires
``c/{fn_id}\x1f{cron}``            last fired cron tick of a function's cron trigger
``x/{expires_ms:8 bytes BE}{key}`` expiry index: ``key`` is deleted once a record's
                                   time passes ``expires_ms``
``m/offset``                       next input offset to apply (8 bytes BE)
=================================  ===========================================

The wait matcher's tables (``engine/matcher.py``) live in their own database per
``waits`` partition, with the same offset key and expiry index.

Timer keys sort by due time, so the timer service reads only the due prefix.
"""

from __future__ import annotations

import bisect
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

from engine.fold import RunState

RUN = b"r/"
TIMER = b"t/"
EVENT = b"e/"
META = b"i/"
CRON = b"c/"
EXPIRY = b"x/"
OFFSET_KEY = b"m/offset"
# Decoded run states kept in memory per partition: a run's records usually arrive a few
# batches apart, and unpacking its state again cost ~23% of the engine's CPU under load.
STATE_CACHE_RUNS = 10_000
STATE_PREFIXES = (CRON, EVENT, META, RUN, TIMER, EXPIRY)


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
        opts.set_block_based_table_factory(self._table)
        return opts


_DEFAULT_MEMORY: StateMemory | None = None


def default_memory() -> StateMemory:
    global _DEFAULT_MEMORY
    if _DEFAULT_MEMORY is None:
        _DEFAULT_MEMORY = StateMemory()
    return _DEFAULT_MEMORY


def timer_key(due_ms: int, run_id: str, timer_id: str) -> bytes:
    return TIMER + due_ms.to_bytes(8, "big") + f"{run_id}/{timer_id}".encode()


def expiry_key(expires_ms: int, key: bytes) -> bytes:
    return EXPIRY + max(0, expires_ms).to_bytes(8, "big") + key


def parse_timer_key(key: bytes) -> tuple[int, str, str]:
    due = int.from_bytes(key[2:10], "big")
    run_id, _, timer_id = key[10:].decode().partition("/")
    return due, run_id, timer_id


def _pack(state: RunState) -> bytes:
    return msgpack.packb(state, use_bin_type=True)


def _unpack(raw: bytes) -> RunState:
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

    def next_offset(self) -> int:
        raw = self.db.get(OFFSET_KEY)
        return int.from_bytes(raw, "big") if raw is not None else 0

    def get_run(self, run_id: str) -> RunState | None:
        """The stored state of a run (a fresh copy, safe to mutate)."""
        raw = self.db.get(RUN + run_id.encode())
        return _unpack(raw) if raw is not None else None

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

    def runs_for_event(self, event_id: str) -> list[str]:
        prefix = EVENT + event_id.encode() + b"/"
        return [k[len(prefix):].decode() for k in self._keys(prefix)]

    def run_ids(self) -> Iterator[str]:
        for k in self._keys(RUN):
            yield k[len(RUN):].decode()

    def due_timers(self, now_ms: int) -> list[tuple[int, str, str]]:
        """Every timer due at or before ``now_ms``, earliest first."""
        out = []
        it = self.db.iter()
        it.seek(TIMER)
        while it.valid():
            key = it.key()
            if not key.startswith(TIMER):
                break
            due, run_id, timer_id = parse_timer_key(key)
            if due > now_ms:
                break
            out.append((due, run_id, timer_id))
            it.next()
        it.status()
        return out

    def next_due(self, after: int = -1) -> int | None:
        """The earliest due time of a timer due after ``after`` ms, if any."""
        it = self.db.iter()
        it.seek(TIMER + (after + 1).to_bytes(8, "big") if after >= 0 else TIMER)
        if it.valid() and it.key().startswith(TIMER):
            return parse_timer_key(it.key())[0]
        it.status()
        return None

    def scan(self, prefix: bytes, upto: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """Every (key, value) under ``prefix`` (and below ``upto``, if given), in order."""
        out = []
        it = self.db.iter()
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix) or (upto is not None and key >= upto):
                break
            out.append((key, it.value()))
            it.next()
        it.status()
        return out

    def next_expiry(self) -> int | None:
        """The earliest expiry time in the expiry index, if any (cached)."""
        if self._next_expiry is _UNKNOWN:
            it = self.db.iter()
            it.seek(EXPIRY)
            if not it.valid():
                it.status()
            self._next_expiry = (int.from_bytes(it.key()[2:10], "big")
                                 if it.valid() and it.key().startswith(EXPIRY) else None)
        return self._next_expiry  # type: ignore[return-value]

    def state_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every state entry (runs, timers, index), offsets excluded, in key order."""
        for prefix in STATE_PREFIXES:
            it = self.db.iter()
            it.seek(prefix)
            while it.valid() and it.key().startswith(prefix):
                yield it.key(), it.value()
                it.next()
            it.status()

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


class BatchView:
    """A per-batch view of one partition's tables for the fold.

    Reads go to the store once per run and are cached; writes accumulate here and go
    to RocksDB in one WriteBatch together with the next offset, so a crash leaves
    either the whole batch applied or none of it.
    """

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.runs: dict[str, RunState | None] = {}
        self.dirty: set[str] = set()
        self.puts: dict[bytes, bytes] = {}
        # The keys of ``puts`` in order, so a prefix scan reads only its own range
        # (the matcher scans several prefixes per event).
        self.put_keys: list[bytes] = []
        self.deletes: set[bytes] = set()
        self.new_timers: list[int] = []
        self.min_new_expiry: int | None = None
        self.expired_upto: int | None = None
        self.touched_expiry = False

    def get_run(self, run_id: str) -> RunState | None:
        if run_id not in self.runs:
            self.runs[run_id] = self.store.cached_run(run_id)
        return self.runs[run_id]

    def put_run(self, run_id: str, state: RunState) -> None:
        self.runs[run_id] = state
        self.dirty.add(run_id)

    def put_timer(self, due_ms: int, run_id: str, timer_id: str) -> None:
        self.put_raw(timer_key(due_ms, run_id, timer_id), b"")
        self.new_timers.append(due_ms)

    def delete_timer(self, due_ms: int, run_id: str, timer_id: str) -> None:
        self.delete_raw(timer_key(due_ms, run_id, timer_id))

    def index_event(self, event_id: str, run_id: str) -> None:
        self.put_raw(EVENT + f"{event_id}/{run_id}".encode(), b"")

    # Raw keys: small tables beside the runs (dedupe keys, cron ticks, the matcher's).

    def get_raw(self, key: bytes) -> bytes | None:
        if key in self.puts:
            return self.puts[key]
        if key in self.deletes:
            return None
        value: bytes | None = self.store.db.get(key)
        return value

    def put_raw(self, key: bytes, value: bytes) -> None:
        self.deletes.discard(key)
        if key not in self.puts:
            bisect.insort(self.put_keys, key)
        self.puts[key] = value

    def delete_raw(self, key: bytes) -> None:
        if self.puts.pop(key, None) is not None:
            del self.put_keys[bisect.bisect_left(self.put_keys, key)]
        self.deletes.add(key)

    def scan_raw(self, prefix: bytes, upto: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """Keys under ``prefix`` (below ``upto``), this batch's changes included."""
        merged = {k: v for k, v in self.store.scan(prefix, upto) if k not in self.deletes}
        keys = self.put_keys
        for i in range(bisect.bisect_left(keys, prefix), len(keys)):
            k = keys[i]
            if not k.startswith(prefix) or (upto is not None and k >= upto):
                break
            merged[k] = self.puts[k]
        return sorted(merged.items())

    def get_value(self, key: bytes) -> Any:
        raw = self.get_raw(key)
        return None if raw is None else _unpack(raw)

    def put_value(self, key: bytes, value: Any, *, expires_ms: int | None = None) -> None:
        """Store ``value`` at ``key``; with ``expires_ms``, it goes once a later record's
        time passes that (see :meth:`expire`)."""
        self.put_raw(key, _pack(value))
        if expires_ms is not None:
            self.put_raw(expiry_key(expires_ms, key), b"")
            self.min_new_expiry = (expires_ms if self.min_new_expiry is None
                                   else min(self.min_new_expiry, expires_ms))
            self.touched_expiry = True

    def expire(self, now_ms: int) -> list[bytes]:
        """Delete every key whose expiry is before ``now_ms``; return them.

        Called by the fold for each record with that record's time, so the result
        depends only on the records, never on how they were batched.
        """
        # Expiries in the store below ``expired_upto`` were handled by an earlier call
        # in this batch; only entries put since then can add new ones.
        low = (self.store.next_expiry()
               if self.expired_upto is None or now_ms > self.expired_upto else None)
        if self.min_new_expiry is not None:
            low = self.min_new_expiry if low is None else min(low, self.min_new_expiry)
        if low is None or low >= now_ms:
            return []
        self.min_new_expiry = None
        gone = []
        for xkey, _ in self.scan_raw(EXPIRY, EXPIRY + now_ms.to_bytes(8, "big")):
            key = xkey[10:]
            self.delete_raw(xkey)
            if self.get_raw(key) is not None:
                self.delete_raw(key)
                gone.append(key)
        self.touched_expiry = True
        self.expired_upto = max(now_ms, self.expired_upto or now_ms)
        return gone

    def commit(self, next_offset: int) -> None:
        """Write every change and the next input offset atomically."""
        batch = WriteBatch(raw_mode=True)
        for run_id in self.dirty:
            state = self.runs[run_id]
            assert state is not None
            batch.put(RUN + run_id.encode(), _pack(state))
            self.store.remember(run_id, state)
        for key, value in self.puts.items():
            batch.put(key, value)
        for key in self.deletes:
            batch.delete(key)
        batch.put(OFFSET_KEY, next_offset.to_bytes(8, "big"))
        self.store.write(batch)
        if self.touched_expiry:
            self.store._next_expiry = _UNKNOWN

    def discard(self) -> None:
        """Forget this view's changes: cached states it mutated are dropped too."""
        self.store.evict(self.runs.keys())


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


def decode_state(raw: bytes) -> Any:
    return _unpack(raw)
