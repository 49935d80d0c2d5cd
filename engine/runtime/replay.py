"""Rebuild every state table from the ``runs`` topic into a fresh directory."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from engine.clock import now_ms
from engine.runtime.batch import apply_batch
from engine.runtime.processor import tune_gc
from engine.store.partition import PartitionStore, state_hash
from topics.catalog import Catalog
from topics.settings import Settings


class ReplayError(RuntimeError):
    pass


def replay(settings: Settings, state_dir: Path, *, timeout_s: float = 600) -> str:
    """Fold the whole ``runs`` topic into empty tables under ``state_dir``; return the
    state hash (equal to the live engine's for the same history)."""
    if state_dir.exists() and any(state_dir.iterdir()):
        raise ReplayError(f"{state_dir} is not empty; replay writes into a fresh directory")
    tune_gc()
    catalog = Catalog(settings)
    consumer = Consumer(settings.client_config({
        **settings.consumer_tuning(),
        "group.id": settings.prefix + "replay", "enable.partition.eof": True,
    }))
    parts = list(range(catalog.partitions))
    stores = {p: PartitionStore(state_dir / f"runs-{p}") for p in parts}
    try:
        consumer.assign([TopicPartition(catalog.runs, p, 0) for p in parts])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(parts):
            if time.monotonic() > deadline:
                raise ReplayError(f"replay did not reach the end of {catalog.runs} "
                                  f"within {timeout_s:.0f} s")
            msgs = consumer.consume(5000, 0.2)
            by_partition: dict[int, list[Message]] = {}
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition() or 0)
                    continue
                p = m.partition() or 0
                at_end.discard(p)
                by_partition.setdefault(p, []).append(m)
            for p, batch in by_partition.items():
                # live_from beyond every offset: rebuild state only, emit nothing.
                result = apply_batch(stores[p], batch, settings, live_from=2**63,
                                     now_ms=now_ms())
                result.view.commit(result.next_offset)
        return state_hash(list(stores.values()))
    finally:
        consumer.close()
        for store in stores.values():
            store.close()
