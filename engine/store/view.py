"""The per-batch view of one partition's tables that the folds read and write."""

from __future__ import annotations

import bisect
from typing import Any

from rocksdict import WriteBatch

from engine.runstate import TERMINAL, RunState
from engine.store import keys
from engine.store.partition import PartitionStore, pack, unpack

# Not read from the store yet (None: read, and no such run).
_UNREAD: Any = object()


class NeedsHistory(Exception):
    """The fold asked for a run the store does not hold while the partition's finished
    runs are still being loaded from ``history``: it may be one of them, so the record
    must wait until they are (engine/runtime/history.py)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} may be a finished run not loaded yet")
        self.run_id = run_id


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
        # While the store's finished runs load (``store.history_pending``): the one run
        # id that may be missing because it is new (a run.requested's own run).
        self.may_be_new: str | None = None
        self.packed: dict[str, bytes] = {}  # ended runs' states packed by archived()

    def get_run(self, run_id: str) -> RunState | None:
        state = self.runs.get(run_id, _UNREAD)
        if state is _UNREAD:
            state = self.store.cached_run(run_id)
            if state is None and self.store.history_pending and run_id != self.may_be_new:
                raise NeedsHistory(run_id)
            self.runs[run_id] = state
        return state

    def archived(self) -> list[tuple[bytes, bytes]]:
        """The keys this batch writes that are not live state (ended runs' states and
        event-index entries): they go to ``history`` before the batch is committed."""
        out = []
        for run_id in self.dirty:
            state = self.runs[run_id]
            if state is not None and state["status"] in TERMINAL:
                raw = self.packed[run_id] = pack(state)
                out.append((keys.run_key(run_id), raw))
        out += [(k, self.puts[k]) for k in self.put_keys if k.startswith(keys.EVENT)]
        return out

    def put_run(self, run_id: str, state: RunState) -> None:
        self.runs[run_id] = state
        self.dirty.add(run_id)

    def put_timer(self, due_ms: int, run_id: str, timer_id: str) -> None:
        self.put_raw(keys.timer_key(due_ms, run_id, timer_id), b"")
        self.new_timers.append(due_ms)

    def delete_timer(self, due_ms: int, run_id: str, timer_id: str) -> None:
        self.delete_raw(keys.timer_key(due_ms, run_id, timer_id))

    def index_event(self, event_id: str, run_id: str) -> None:
        self.put_raw(keys.event_run_key(event_id, run_id), b"")

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

    def scan_raw(self, prefix: bytes, upto: bytes | None = None, start: bytes | None = None
                 ) -> list[tuple[bytes, bytes]]:
        """Keys under ``prefix`` (from ``start``, below ``upto``), this batch's changes
        included."""
        merged = {k: v for k, v in self.store.scan(prefix, upto, start)
                  if k not in self.deletes}
        keys = self.put_keys
        first = prefix if start is None or start < prefix else start
        for i in range(bisect.bisect_left(keys, first), len(keys)):
            k = keys[i]
            if not k.startswith(prefix) or (upto is not None and k >= upto):
                break
            merged[k] = self.puts[k]
        return sorted(merged.items())

    def scan_values(self, prefix: bytes, limit: int | None = None
                    ) -> list[tuple[bytes, Any]]:
        """The first ``limit`` (all if None) keys under ``prefix`` and their values, in
        key order, this batch's changes included; reads no more of the store than that."""
        if limit is None:
            return [(k, unpack(v)) for k, v in self.scan_raw(prefix)]
        out: list[tuple[bytes, Any]] = []
        keys = self.put_keys
        i = bisect.bisect_left(keys, prefix)

        def put_at(i: int) -> bytes | None:
            return keys[i] if i < len(keys) and keys[i].startswith(prefix) else None

        for key, raw in self.store.iterate(prefix):
            while len(out) < limit and (put := put_at(i)) is not None and put <= key:
                out.append((put, unpack(self.puts[put])))
                i += 1
            if len(out) >= limit:
                return out
            if key not in self.deletes and key not in self.puts:
                out.append((key, unpack(raw)))
        while len(out) < limit and (put := put_at(i)) is not None:
            out.append((put, unpack(self.puts[put])))
            i += 1
        return out

    def delete_value(self, key: bytes) -> None:
        self.delete_raw(key)

    def get_value(self, key: bytes) -> Any:
        raw = self.get_raw(key)
        return None if raw is None else unpack(raw)

    def put_value(self, key: bytes, value: Any, *, expires_ms: int | None = None) -> None:
        """Store ``value`` at ``key``; with ``expires_ms``, it goes once a later record's
        time passes that (see :meth:`expire`)."""
        self.put_raw(key, pack(value))
        if expires_ms is not None:
            self.put_raw(keys.expiry_key(expires_ms, key), b"")
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
        # An earlier call in this batch deleted every entry below ``expired_upto``: scan
        # from there (or from the earliest entry put since), not over those deletions
        # again — re-folding history older than the dedupe window expires a key at
        # nearly every record, and rescanning made a batch quadratic (bench/restore.py).
        start = None
        if self.expired_upto is not None:
            since = self.expired_upto if self.min_new_expiry is None else min(
                self.expired_upto, self.min_new_expiry)
            start = keys.expiries_before(max(0, since))
        gone = []
        for xkey, _ in self.scan_raw(keys.EXPIRY, keys.expiries_before(now_ms), start):
            _, key = keys.parse_expiry_key(xkey)
            self.delete_raw(xkey)
            if self.get_raw(key) is not None:
                self.delete_raw(key)
                gone.append(key)
        self.touched_expiry = True
        self.expired_upto = max(now_ms, self.expired_upto or now_ms)
        # The earliest expiry put in this batch that is still to come: it must wake a
        # later call (forgetting it kept keys past their window when several were put
        # in one batch, so the state depended on the batching).
        i = bisect.bisect_left(self.put_keys, keys.expiries_before(max(0, now_ms)))
        pending = self.put_keys[i] if i < len(self.put_keys) else None
        self.min_new_expiry = (keys.parse_expiry_key(pending)[0]
                               if pending is not None and pending.startswith(keys.EXPIRY)
                               else None)
        return gone

    def commit(self, next_offset: int) -> None:
        """Write every change and the next input offset atomically."""
        batch = WriteBatch(raw_mode=True)
        for run_id in self.dirty:
            state = self.runs[run_id]
            assert state is not None
            raw = self.packed.get(run_id)
            batch.put(keys.run_key(run_id), raw if raw is not None else pack(state))
            # The live-run index snapshots read (only ``runs`` databases have runs).
            if state["status"] in TERMINAL:
                batch.delete(keys.live_key(run_id))
            else:
                batch.put(keys.live_key(run_id), b"")
            self.store.remember(run_id, state)
        for key, value in self.puts.items():
            batch.put(key, value)
        for key in self.deletes:
            batch.delete(key)
        batch.put(keys.OFFSET_KEY, keys.offset_value(next_offset))
        self.store.write(batch)
        if self.touched_expiry:
            self.store.forget_next_expiry()

    def discard(self) -> None:
        """Forget this view's changes: cached states it mutated are dropped too."""
        self.store.evict(self.runs.keys())
