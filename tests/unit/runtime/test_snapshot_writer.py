"""The snapshot writer against a real RocksDB store (no broker): a snapshot is written
when due and only then, and API queries on the partition are not held up by its broker
round trips (the store's lock is free while its records are produced and flushed)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.runtime.snapshot import SnapshotWriter
from engine.store.partition import PartitionStore
from tests.unit.runtime.test_apply import msgs
from tests.unit.runtime.test_offset_gaps import Msg
from tests.unit.runtime.test_restore_state import fold, requests
from topics import snapshots as wire
from topics.catalog import Catalog
from topics.settings import Settings


class LockProbe:
    """A producer that delivers at once and, at every produce and flush, asks from
    another thread (as an API query does) whether the store's lock can be taken."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.values: list[bytes] = []
        self.lock_free: list[bool] = []
        self.callbacks: list[Callable[[Any, Any], None]] = []

    def _probe(self) -> None:
        got: list[bool] = []

        def query() -> None:
            if self.store.lock.acquire(timeout=2):
                self.store.lock.release()
                got.append(True)
            else:
                got.append(False)
        t = threading.Thread(target=query)
        t.start()
        t.join()
        self.lock_free.append(got == [True])

    def produce(self, _topic: str, value: bytes, _key: bytes, partition: int,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        self._probe()
        self.values.append(value)
        if on_delivery is not None:
            self.callbacks.append(on_delivery)

    def flush(self, _timeout: float) -> int:
        self._probe()
        for i, cb in enumerate(self.callbacks):
            cb(None, Msg(100 + i))
        self.callbacks.clear()
        return 0


def test_a_snapshot_is_written_without_holding_the_store_lock(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "runs-0")
    try:
        fold(store, msgs(*requests("R1", "R2", "R3")), [])
        producer = LockProbe(store)
        now = [0]
        writer = SnapshotWriter(Catalog(Settings()), producer,  # type: ignore[arg-type]
                                interval_ms=1000, clock_ms=lambda: now[0])
        writer.assigned("runs", 0)

        writer.write_due([("runs", 0, store)])
        assert producer.values == []  # not due yet

        now[0] = 1000
        writer.write_due([("runs", 0, store)])
        records = [wire.decode(v) for v in producer.values]
        assert isinstance(records[0], wire.Begin) and isinstance(records[-1], wire.End)
        assert records[-1].entries > 0
        assert producer.lock_free and all(producer.lock_free)

        now[0] = 2000  # due again, but nothing new was folded: nothing written
        producer.values.clear()
        writer.write_due([("runs", 0, store)])
        assert producer.values == []
    finally:
        store.close()
