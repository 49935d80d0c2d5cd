"""Profile the fold's CPU path without a broker: ``python -m bench.profile_fold``.

Folds the same history ``bench.fold_rate`` pre-produces (:mod:`bench.history`) through
what the processor runs per batch for a ``runs`` partition: :func:`apply_batch`, encoding
the emitted records, and the view's commit to RocksDB. Kafka's consume and produce are
left out, so the rate is an upper bound of the processor loop's, and the profile shows
where the Python time goes. ``--profile`` prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.history import history
from engine.runtime.batch import BatchResult, apply_batch
from engine.runtime.processor import tune_gc
from engine.store.partition import PartitionStore
from topics.catalog import partition_for
from topics.codec import encode
from topics.settings import Settings


@dataclass(slots=True)
class Msg:
    """A consumed record, as much of it as the batch layer reads."""

    partition_: int
    offset_: int
    key_: bytes
    value_: bytes

    def topic(self) -> str:
        return "bench.runs"

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes:
        return self.key_

    def value(self) -> bytes:
        return self.value_

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000_000 + self.offset_)


def messages(runs: int, partitions: int) -> list[Msg]:
    """The history as consumed: per-partition offsets, in produce order."""
    next_offset = [0] * partitions
    out = []
    for key, value in history(runs):
        p = partition_for(key, partitions)
        out.append(Msg(p, next_offset[p], key.encode(), value))
        next_offset[p] += 1
    return out


def fold_all(msgs: list[Msg], stores: dict[int, PartitionStore], settings: Settings,
             batch_size: int,
             before_commit: Callable[[int, BatchResult], None] | None = None) -> int:
    """Fold ``msgs`` as the processor does (batches per partition, emits encoded, each
    batch committed); ``before_commit(partition, result)`` runs where the processor's
    edge does. Returns the records applied."""
    applied = 0
    for start in range(0, len(msgs), batch_size):
        by_partition: dict[int, list[Msg]] = {}
        for m in msgs[start:start + batch_size]:
            by_partition.setdefault(m.partition_, []).append(m)
        for p, batch in by_partition.items():
            result = apply_batch(stores[p], batch, settings, live_from=0, now_ms=0)
            for e in result.emits:
                encode(e.record)
            if before_commit is not None:
                before_commit(p, result)
            result.view.commit(result.next_offset)
            applied += result.applied
    return applied


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    msgs = messages(args.runs, args.partitions)
    settings = Settings()
    tune_gc()  # as the processor runs
    with tempfile.TemporaryDirectory(prefix="stepstream-profile-fold-") as tmp:
        stores = {p: PartitionStore(Path(tmp) / str(p)) for p in range(args.partitions)}
        prof = cProfile.Profile() if args.profile else None
        t = time.perf_counter()
        cpu = time.process_time()
        if prof:
            prof.enable()
        applied = fold_all(msgs, stores, settings, args.batch)
        if prof:
            prof.disable()
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
        for store in stores.values():
            store.close()
    print(f"{applied} records in {elapsed:.2f} s: {applied / elapsed:,.0f} records/s "
          f"(cpu {cpu:.2f} s)")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
