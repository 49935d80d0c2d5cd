"""Snapshots of each partition's live state on the ``snapshots`` topic: writing them
every ``snapshot_interval_ms``, and reading the newest complete one back on restore
(docs/architecture.md, "Restore"; the record format is :mod:`topics.snapshots`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Message, Producer, TopicPartition

from engine.runtime.ranges import bulk_consumer, fetch_range
from engine.store.partition import PartitionStore
from topics import snapshots as wire
from topics.catalog import Catalog
from topics.ids import new_ulid
from topics.settings import Settings

log = logging.getLogger("stepstream.snapshot")

# Records read per step backwards while looking for the newest complete snapshot.
WALK_BACK = 64


class SnapshotWriter:
    """Writes each owned partition's snapshot when it is due. Called by the processor
    between batches, from its own thread: the entries are then those of the last
    committed WriteBatch, so a snapshot is never ahead of RocksDB."""

    def __init__(self, catalog: Catalog, producer: Producer, interval_ms: int,
                 clock_ms: Callable[[], int], chunk_bytes: int = wire.CHUNK_BYTES) -> None:
        self.catalog = catalog
        self.producer = producer
        self.interval_ms = interval_ms
        self.clock_ms = clock_ms
        self.chunk_bytes = chunk_bytes
        # (table, partition) -> (when written, at which offset)
        self.written: dict[tuple[str, int], tuple[int, int]] = {}

    def assigned(self, table: str, p: int) -> None:
        """A newly owned partition's first snapshot waits one interval: its restore
        just read one, or it starts from nothing."""
        self.written[(table, p)] = (self.clock_ms(), -1)

    def forget(self, table: str, p: int) -> None:
        self.written.pop((table, p), None)

    def write_due(self, stores: list[tuple[str, int, PartitionStore]]) -> None:
        if self.interval_ms <= 0:
            return
        now = self.clock_ms()
        for table, p, store in stores:
            when, offset = self.written.get((table, p), (now, -1))
            if now - when < self.interval_ms:
                continue
            with store.lock:
                if store.closed:
                    continue
                at = store.next_offset()
            if at == offset or at == 0:
                self.written[(table, p)] = (now, offset)  # nothing new to keep
                continue
            # Written without the store's lock: this thread is the only one that writes
            # live state or closes the store, so nothing changes under the snapshot,
            # and API queries on the partition need not wait for its broker round trips.
            # (The history loader writes meanwhile, but only finished runs and the event
            # index, which a snapshot leaves out, and never over a live run.)
            try:
                end = self.write(table, p, store)
            except Exception:
                # Not fatal: the previous snapshot still stands, the next is tried
                # an interval later (a restore meanwhile re-folds a longer tail).
                log.exception("%s[%d]: snapshot not written", table, p)
                self.written[(table, p)] = (now, offset)
                continue
            self.written[(table, p)] = (now, at)
            log.info("%s[%d]: snapshot %s at offset %d: %d entries, %d bytes", table, p,
                     end.snapshot_id, at, end.entries, end.size)

    def write(self, table: str, p: int, store: PartitionStore) -> wire.End:
        """Write one snapshot of ``store``: begin marker, chunks, end marker."""
        snapshot_id = new_ulid(self.clock_ms())
        key = wire.record_key(table, p)
        begin = wire.Begin(snapshot_id, table, p, store.next_offset(), self.clock_ms())
        begin_offset = self._produce_one(p, key, wire.encode(begin))
        chunks = 0
        summary: tuple[int, int, str] = (0, 0, "")
        for item in wire.chunked(snapshot_id, store.live_entries(), self.chunk_bytes):
            if isinstance(item, wire.Chunk):
                self._produce(p, key, wire.encode(item))
                chunks += 1
            else:
                summary = item
        entries, size, sha = summary
        end = wire.End(snapshot_id, table, begin_offset, chunks, entries, size, sha)
        self._produce(p, key, wire.encode(end))
        self._flush()
        return end

    def _produce(self, p: int, key: bytes, value: bytes,
                 on_delivery: Callable[[Any, Message], None] | None = None) -> None:
        while True:
            try:
                self.producer.produce(self.catalog.snapshots, value, key, partition=p,
                                      on_delivery=on_delivery)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _produce_one(self, p: int, key: bytes, value: bytes) -> int:
        """Produce and wait for the record's offset (the end marker points at it)."""
        got: list[int] = []
        failed: list[str] = []

        def delivered(err: Any, msg: Message) -> None:
            if err is not None:
                failed.append(str(err))
            else:
                got.append(msg.offset() or 0)

        self._produce(p, key, value, delivered)
        self._flush()
        if failed or not got:
            raise RuntimeError(f"snapshot marker not written: {failed[:1]}")
        return got[0]

    def _flush(self) -> None:
        if self.producer.flush(60):
            raise RuntimeError("snapshot records not delivered within 60 s")


@dataclass(frozen=True, slots=True)
class Found:
    """The newest complete snapshot of a partition, and how much was read to find it."""

    begin: wire.Begin
    entries: list[tuple[bytes, bytes]]
    records_read: int


def read_snapshot(settings: Settings, table: str, p: int, timeout_s: float = 60
                  ) -> Found | None:
    """The newest complete snapshot of database ``table`` of partition ``p`` (None:
    there is none). Reads backwards from the partition's end: the last records first,
    back to the begin marker of the newest end marker whose snapshot is whole."""
    catalog = Catalog(settings)
    consumer = bulk_consumer(settings, "stepstream-restore")
    deadline = time.monotonic() + timeout_s
    try:
        low, end = _bounds(consumer, catalog.snapshots, p, deadline)
        start = end
        records: list[tuple[int, wire.SnapshotRecord]] = []
        read = 0
        while start > low:
            if time.monotonic() > deadline:
                log.warning("snapshots[%d]: no complete %s snapshot found within %.0f s; "
                            "restoring from offset 0", p, table, timeout_s)
                return None
            wanted = max(low, start - WALK_BACK)
            # An end marker seen whose begin lies further back: read back to it at once.
            begins = [r.begin_offset for _o, r in records
                      if isinstance(r, wire.End) and r.table == table]
            if begins:
                wanted = max(low, min(wanted, min(begins)))
            fetched = fetch_range(consumer, catalog.snapshots, p, wanted, start, deadline)
            read += len(fetched)
            records = [*_decoded(fetched), *records]
            start = wanted
            found = wire.complete_snapshot(records, table)
            if found is not None:
                return Found(found[0], found[1], read)
        return None
    finally:
        consumer.close()


def _decoded(msgs: list[Message]) -> list[tuple[int, wire.SnapshotRecord]]:
    out = []
    for m in msgs:
        try:
            out.append((m.offset() or 0, wire.decode(m.value())))
        except wire.SnapshotError as exc:
            log.warning("snapshots[%s]@%s skipped: %s", m.partition(), m.offset(), exc)
    return out


def _bounds(consumer: Consumer, topic: str, p: int, deadline: float) -> tuple[int, int]:
    """The partition's (log start, end). The end comes from a fetch's high watermark:
    the dev broker answers ListOffsets wrongly, every fetch carries the right one (see
    engine/api/topic_reader.py)."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
    low = max(low, 0)
    consumer.assign([TopicPartition(topic, p, max(low, high - 1, 0))])
    while time.monotonic() < deadline:
        msgs = consumer.consume(100, 0.1)
        _lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
        if hi is not None and hi >= 0 and hi != OFFSET_INVALID:
            return low, hi
        if any((e := m.error()) is not None and e.code() == KafkaError._PARTITION_EOF
               for m in msgs):
            return low, max(high, 0)
    raise TimeoutError(f"no fetch answer from {topic}[{p}] in time")
