"""Bounded restore of a partition whose database is empty (moved to this process, a
new machine, or set aside as corrupt): the newest complete snapshot, then the tail of
the input from the snapshot's offset, with finished runs loaded in the background
(docs/architecture.md, "Restore"). No snapshot: the whole input, from offset 0.

The processor calls :meth:`Restorer.restore` on assignment, :meth:`Restorer.blocked`
for a batch stopped at a record that needs a finished run, and
:meth:`Restorer.resume_ready` every round to let such a partition go on once loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition

from engine.runtime.history import HistoryLoader, history_targets
from engine.runtime.snapshot import read_snapshot
from engine.store import keys
from engine.store.partition import PartitionStore
from topics.catalog import Catalog
from topics.settings import Settings

log = logging.getLogger("stepstream.restore")


@dataclass(slots=True)
class Restored:
    """How one partition was restored (for the log, tests and the benchmark)."""

    table: str
    partition: int
    snapshot_offset: int | None = None  # None: no snapshot, re-folded from offset 0
    snapshot_entries: int = 0
    snapshot_records_read: int = 0
    snapshot_s: float = 0.0
    history_entries: int | None = None  # set once the background load is done
    history_s: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Restorer:
    """Restores partitions and tracks their background history loads."""

    def __init__(self, settings: Settings, catalog: Catalog,
                 changed: threading.Event | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.changed = changed  # set when a partition's history is loaded
        self.loaders: dict[int, HistoryLoader] = {}
        self.paused: dict[int, TopicPartition] = {}
        self.restored: dict[tuple[str, int], Restored] = {}

    def opened(self, table: str, p: int, store: PartitionStore, producer: Producer, *,
               look: bool = True) -> None:
        """A partition database was opened on assignment (or after damage): an empty
        one restores from its newest snapshot, if it should ``look`` for one; a
        ``runs`` one goes on loading history cut short, or, written before history
        existed, puts its ended runs there once."""
        if store.is_empty():
            r = self.restore(table, p, store, look)
            if r.snapshot_offset is not None:
                log.info("%s[%d]: restored snapshot at offset %d (%d entries, %d records "
                         "read, %.2f s)%s", table, p, r.snapshot_offset, r.snapshot_entries,
                         r.snapshot_records_read, r.snapshot_s,
                         "; finished runs load in the background" if table == "runs" else "")
        elif table == "runs":
            self.load_history(p, store)  # if a load was cut short
            if self.settings.snapshot_interval_ms:
                self.backfill(p, store, producer)

    def restore(self, table: str, p: int, store: PartitionStore, look: bool = True
                ) -> Restored:
        """Fill an empty ``store`` from the newest complete snapshot, if there is one
        (and ``look`` says to look: not looking only costs a re-fold from offset 0)."""
        report = Restored(table, p)
        self.restored[(table, p)] = report
        started = time.monotonic()
        if not self.settings.snapshot_interval_ms:
            report.done.set()  # snapshots off: no history either; re-folded from 0
            return report
        found = read_snapshot(self.settings, table, p) if look else None
        if found is None:
            if table == "runs":
                # Re-folded from offset 0, so every ended run goes to history again.
                store.put_entries([(keys.HISTORY_MARK, b"1")])
            report.done.set()
            return report
        upto = found.begin.offset
        pending = [(keys.HISTORY_PENDING, keys.offset_value(upto))] if table == "runs" else []
        # One WriteBatch: a crash before the history load is done leaves the mark.
        report.snapshot_entries = store.put_entries([*found.entries, *pending]) - len(pending)
        report.snapshot_offset = upto
        report.snapshot_records_read = found.records_read
        report.snapshot_s = time.monotonic() - started
        if table == "runs":
            self.load_history(p, store, report)
        else:
            report.done.set()
        return report

    def load_history(self, p: int, store: PartitionStore, report: Restored | None = None
                     ) -> None:
        """Load partition ``p``'s finished runs up to the offset its pending mark names
        (just restored, or a restart before the load was done), in the background."""
        raw = store.db.get(keys.HISTORY_PENDING)
        if raw is None:
            return
        upto = keys.parse_offset_value(raw)
        if report is None:
            report = self.restored[("runs", p)] = Restored("runs", p, snapshot_offset=upto)
            log.info("runs[%d]: finished runs up to offset %d were still loading; going on",
                     p, upto)
        done = report
        store.history_pending = True
        loader = HistoryLoader(self.settings, p, store, upto,
                               on_done=lambda _p, n, s: self._loaded(done, n, s))
        self.loaders[p] = loader
        loader.start()

    def _loaded(self, report: Restored, n: int, took: float) -> None:
        report.history_entries, report.history_s = n, took
        report.done.set()
        if self.changed is not None:
            self.changed.set()  # the partition now answers for its finished runs

    def backfill(self, p: int, store: PartitionStore, producer: Producer) -> int:
        """A ``runs`` database written before history existed: index its live runs and
        put every ended run on ``history`` once (a one-off as large as the history),
        then mark it, so snapshots of it may be used."""
        if store.get_value(keys.HISTORY_MARK) is not None:
            return 0
        if store.is_empty():
            store.put_entries([(keys.HISTORY_MARK, b"1")])
            return 0
        store.index_live_runs()
        at = store.next_offset()
        n = 0
        for key, value in store.archived_items():
            for topic, part, k, v in history_targets(self.catalog, p, [(key, value)], at,
                                                     self.settings.max_record_bytes):
                _produce(producer, topic, part, k, v)
            n += 1
        if producer.flush(120):
            raise RuntimeError(f"runs[{p}]: history backfill not delivered")
        store.put_entries([(keys.HISTORY_MARK, b"1")])
        log.info("runs[%d]: %d ended runs and index entries put on history (once)", p, n)
        return n

    def blocked(self, consumer: Consumer, topic: str, p: int, offset: int) -> None:
        """Partition ``p``'s batch stopped at ``offset``: read it again once loaded."""
        tp = TopicPartition(topic, p, offset)
        if p not in self.paused:
            log.info("runs[%d]: offset %d needs a finished run; waiting for history", p,
                     offset)
            consumer.pause([tp])
        self.paused[p] = tp
        consumer.seek(tp)

    def resume_ready(self, consumer: Consumer, stores: dict[int, PartitionStore]) -> None:
        for p, tp in list(self.paused.items()):
            store = stores.get(p)
            if store is None or not store.history_pending:
                del self.paused[p]
                if store is not None:
                    consumer.resume([tp])
                    consumer.seek(tp)

    def forget(self, p: int) -> None:
        """Partition ``p`` was revoked: stop loading its history."""
        loader = self.loaders.pop(p, None)
        if loader is not None:
            loader.stop()
        self.paused.pop(p, None)


def _produce(producer: Producer, topic: str, p: int, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key, partition=p)
            return
        except BufferError:
            producer.poll(0.05)
