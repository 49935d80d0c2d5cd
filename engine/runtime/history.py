"""Finished runs on the ``history`` topic: written as they leave the live state, and
loaded back in the background after a partition is restored from a snapshot
(docs/architecture.md, "Restore").

Each batch's archived keys (:meth:`engine.store.view.BatchView.archived`: an ended
run's state, event-index entries) are produced with the batch's other records, before
its WriteBatch, marked with the ``runs`` offset the batch ends at. A restore from a
snapshot taken at offset ``o`` loads every history record marked at or below ``o``
(the tail re-fold redoes the rest) while the partition already processes: a record
that needs a run the store lacks waits until the load is done (``NeedsHistory``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, TopicPartition

from engine.runtime.ranges import bulk_consumer
from engine.store import keys
from engine.store.partition import PartitionStore
from topics import snapshots as wire
from topics.catalog import Catalog
from topics.settings import Settings

log = logging.getLogger("stepstream.history")

# Room for the history record's own fields around a value part.
_ENVELOPE = 1024
LOAD_BATCH = 5000

Target = tuple[str, int, bytes, bytes]


def history_targets(catalog: Catalog, p: int, archived: list[tuple[bytes, bytes]],
                    at: int, max_record_bytes: int) -> list[Target]:
    """The ``history`` records for the archived keys of a batch of partition ``p``."""
    out: list[Target] = []
    for key, value in archived:
        for kafka_key, rec in wire.history_records(key, value, at,
                                                   max_record_bytes - _ENVELOPE):
            out.append((catalog.history, p, kafka_key, wire.encode_history(rec)))
    return out


class HistoryLoader(threading.Thread):
    """Loads partition ``p``'s finished runs into ``store`` (restored from a snapshot
    taken at offset ``upto``), then clears ``store.history_pending``."""

    def __init__(self, settings: Settings, p: int, store: PartitionStore, upto: int,
                 on_done: Callable[[int, int, float], None] | None = None) -> None:
        super().__init__(name=f"history-{p}", daemon=True)
        self.settings = settings
        self.p = p
        self.store = store
        self.upto = upto
        self.on_done = on_done
        self.stopping = threading.Event()
        self.loaded = 0
        self.error: BaseException | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        started = time.monotonic()
        try:
            self._load()
        except BaseException as exc:  # logged: the partition stays waiting, not wrong
            self.error = exc
            log.exception("history[%d]: load failed; records needing a finished run "
                          "wait until the partition is restored again", self.p)
            return
        if self.stopping.is_set():
            return
        with self.store.lock:
            if self.store.closed:
                return
            self.store.db.delete(keys.HISTORY_PENDING)
            self.store.history_pending = False
        took = time.monotonic() - started
        log.info("history[%d]: %d finished-run entries loaded in %.1f s", self.p,
                 self.loaded, took)
        if self.on_done is not None:
            self.on_done(self.p, self.loaded, took)

    def _load(self) -> None:
        catalog = Catalog(self.settings)
        consumer = bulk_consumer(self.settings, "stepstream-history", from_start=True)
        try:
            # Offset 0: where compaction removed it, auto.offset.reset=earliest applies.
            consumer.assign([TopicPartition(catalog.history, self.p, 0)])
            parts = wire.Reassembly()
            while not self.stopping.is_set():
                pending: list[tuple[bytes, bytes]] = []
                at_end = False
                for m in consumer.consume(LOAD_BATCH, 0.2):
                    err = m.error()
                    if err is not None:
                        at_end |= err.code() == KafkaError._PARTITION_EOF
                        continue
                    try:
                        rec = parts.add(wire.decode_history(m.value()))
                    except wire.SnapshotError as exc:
                        log.warning("history[%d]@%s skipped: %s", self.p, m.offset(), exc)
                        continue
                    if rec is not None and rec.at <= self.upto:
                        pending.append((rec.key, rec.value))
                if pending and not self._apply(pending):
                    return
                if at_end:
                    return
        finally:
            consumer.close()

    def _apply(self, entries: list[tuple[bytes, bytes]]) -> bool:
        """Write a chunk of entries; False if the store was closed (partition revoked)."""
        with self.store.lock:
            if self.store.closed:
                return False
            db = self.store.db
            # Never over a run that is live here: only a run id reused after its dedupe
            # window could be both (docs/architecture.md, "Restore").
            keep = [(k, v) for k, v in entries if not k.startswith(keys.RUN)
                    or db.get(keys.live_key(keys.parse_run_key(k))) is None]
            self.loaded += self.store.put_entries(keep)
        return True
