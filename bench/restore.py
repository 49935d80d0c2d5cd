"""Restore time of one partition: ``--finished`` finished runs (1,000,000) and ``--live``
live ones (1,000), before (full re-fold of ``runs``) and after (snapshot + tail, finished
runs from ``history`` in the background). ``python -m bench.restore [--finished N]``, or
section ``restore`` of ``python -m bench.all`` (``--quick``: 20,000 finished runs).

How the data is made (printed with the figures): the ``runs`` records are written
directly with the wire codec (topics/), as the engine's router and the workers would
have written them — not by running 1M runs through engine and workers, which would take
hours here. Each finished run is 2 records (``run.requested``; one ``outcomes.reported``
with a step's output and the function's result, as a worker running ahead reports
them), all older than the 24 h dedupe window; each live run is a request and one step
reported, waiting for its next task. The engine group's offsets are committed at the
end, as a previous owner that processed everything leaves them.

1. before: an engine with snapshots off (``STEPSTREAM_SNAPSHOT_INTERVAL_MS=0``: today's
   restore) and an empty state directory takes the partition and re-folds ``runs``
   from offset 0; timed from the engine's start to its store reaching the end. Its
   fetch wait is 500 ms, not 10: at 10 ms the dev broker answered fetches from the
   start of a partition of millions of records with nothing, and the re-fold crawled.
2. the partition's previous owner: the database (1) built puts its finished runs on
   ``history`` (the one-off backfill an engine upgraded to snapshots does,
   :meth:`engine.runtime.restore.Restorer.backfill`) and writes a snapshot
   (:class:`engine.runtime.snapshot.SnapshotWriter`) — what it would have done running.
3. after: an engine with snapshots on and an empty state directory takes the partition:
   timed to "resumed" (its store at the end of ``runs``, processing) and to "history
   loaded" (every finished run queryable again).

Both engines join a fresh consumer group on the dev broker first (a few seconds, in both
figures); records re-folded come from the processor's own count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import fmt, jsonable, wait_until
from bench.launch import section_broker
from engine.app import Engine
from engine.cli.provision import ensure_topics
from engine.runtime.restore import Restorer
from engine.runtime.snapshot import SnapshotWriter
from engine.store.partition import PartitionStore
from topics.catalog import Catalog
from topics.codec import encode
from topics.ids import dedupe_key_for, run_id_for
from topics.records import (
    FUNCTION_COMPLETED,
    STEP_COMPLETED,
    Outcome,
    OutcomesReported,
    RunRequested,
)
from topics.settings import Settings

FN = "shop-process-order"
DAY_MS = 86_400_000
DATA_MADE = ("runs records written with the wire codec (2 per finished run, 2 per live "
             "run), not run through workers; engine offsets committed at the end")


def _request(i: int, ts: int) -> tuple[str, RunRequested]:
    event_id = f"E{i:08d}"
    event = {"name": "shop/order.created", "data": {"order_id": i, "total": 12.5},
             "id": event_id, "ts": ts}
    key = dedupe_key_for(FN, "event", event_id)
    run_id = run_id_for(FN, event_id, ts)
    return key, RunRequested(run_id=run_id, fn_id=FN, app_id="shop", partition_key=key,
                             event=event, events=[event], retries=3, backoff_base_ms=1000,
                             ts=ts, dedupe_key=key)


def _report(run_id: str, ts: int, i: int, finished: bool) -> OutcomesReported:
    outcomes = [Outcome(op=STEP_COMPLETED, step_id="charge", output={"charged": i})]
    if finished:
        outcomes.append(Outcome(op=FUNCTION_COMPLETED, output={"ok": True, "order": i}))
    return OutcomesReported(run_id=run_id, task_seq=1, outcomes=outcomes, worker="bench",
                            ts=ts)


def write_runs(settings: Settings, finished: int, live: int) -> int:
    """The partition's ``runs`` history: ``finished`` runs spread over 28 days ending
    2 days ago, then ``live`` runs in the last 10 minutes. The record count."""
    now = int(time.time() * 1000)
    producer = Producer(settings.client_config({**settings.producer_tuning(),
                                                "linger.ms": 50, "batch.size": 1 << 20}))
    topic = Catalog(settings).runs
    n = 0

    def put(key: str, rec: Any) -> None:
        nonlocal n
        while True:
            try:
                producer.produce(topic, encode(rec), key, partition=0)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1

    start, span = now - 30 * DAY_MS, 28 * DAY_MS
    for i in range(finished + live):
        is_live = i >= finished
        ts = (now - 600_000 + (i - finished) * 100) if is_live else start + i * span // max(
            finished, 1)
        key, req = _request(i, ts)
        put(key, req)
        put(key, _report(req.run_id, ts + 50, i, finished=not is_live))
    if producer.flush(300):
        raise RuntimeError("runs records not all delivered")
    return n


def commit_engine_offsets(settings: Settings, end: int) -> None:
    """What the partition's previous owner leaves: the group's offset at the end."""
    c = Consumer(settings.client_config({"group.id": settings.prefix + "engine"}))
    try:
        c.commit(offsets=[TopicPartition(Catalog(settings).runs, 0, end)], asynchronous=False)
    finally:
        c.close()


def timed_restore(settings: Settings, state_dir: Path, end: int) -> dict[str, Any]:
    """Start an engine on ``state_dir`` and time its restore of partition 0."""
    started = time.monotonic()
    engine = Engine(settings, state_dir)
    engine.start()
    try:
        if not engine.wait_ready(120):
            raise RuntimeError(f"engine got no partitions: {engine.error}")
        ready_s = time.monotonic() - started
        processor = engine.processor

        def at_end() -> bool:
            store = processor.stores.get(0)
            return store is not None and store.next_offset() >= end

        wait_until(at_end, 3600, "the partition restored to the end of runs", every=0.01)
        out: dict[str, Any] = {"ready_s": round(ready_s, 2),
                               "resumed_s": round(time.monotonic() - started, 2),
                               "refolded_records": processor.applied_runs}
        report = processor.restorer.restored.get(("runs", 0))
        if report is not None and report.snapshot_offset is not None:
            wait_until(report.done.is_set, 3600, "history loaded", every=0.01)
            out.update(history_loaded_s=round(time.monotonic() - started, 2),
                       history_entries=report.history_entries,
                       history_load_s=round(report.history_s or 0, 2),
                       snapshot_entries=report.snapshot_entries,
                       snapshot_read_s=round(report.snapshot_s, 2),
                       snapshot_offset=report.snapshot_offset)
        return out
    finally:
        engine.stop(120)


def previous_owner(settings: Settings, db: Path) -> dict[str, Any]:
    """Step 2: the finished runs of the database in ``db`` onto ``history``, and a
    snapshot of its live state."""
    store = PartitionStore(db)
    producer = Producer(settings.client_config(settings.producer_tuning()))
    try:
        t = time.monotonic()
        archived = Restorer(settings, Catalog(settings)).backfill(0, store, producer)
        backfill_s = time.monotonic() - t
        t = time.monotonic()
        end = SnapshotWriter(Catalog(settings), producer, settings.snapshot_interval_ms,
                             lambda: int(time.time() * 1000)).write("runs", 0, store)
        return {"history_records": archived, "backfill_s": round(backfill_s, 2),
                "snapshot_write_s": round(time.monotonic() - t, 2),
                "snapshot_entries": end.entries, "snapshot_bytes": end.size}
    finally:
        store.close()


def bench_restore(broker: str | None, *, finished: int, live: int = 1000) -> dict[str, Any]:
    with section_broker(broker) as address, tempfile.TemporaryDirectory() as tmp:
        off = Settings(brokers=address, prefix=f"rb{uuid.uuid4().hex[:6]}.", partitions=1,
                       snapshot_interval_ms=0)
        on = dataclasses.replace(off, snapshot_interval_ms=60_000)
        ensure_topics(off)
        t = time.monotonic()
        end = write_runs(off, finished, live)
        out: dict[str, Any] = {"finished": finished, "live": live, "runs_records": end,
                               "write_s": round(time.monotonic() - t, 2), "data": DATA_MADE}
        print(f"  {end:,} runs records written in {out['write_s']} s", flush=True)
        commit_engine_offsets(off, end)
        # The fetch wait a bulk read needs on the dev broker (engine/runtime/ranges.py):
        # at the engine's 10 ms, fetches from the start of a long partition came back
        # empty and the re-fold crawled; 500 ms keeps "before" at its best here.
        out["before"] = timed_restore(dataclasses.replace(off, fetch_wait_max_ms=500),
                                      Path(tmp) / "before", end)
        print(f"  before: {out['before']}", flush=True)
        out["previous_owner"] = previous_owner(on, Path(tmp) / "before" / "runs-0")
        print(f"  previous owner: {out['previous_owner']}", flush=True)
        out["after"] = timed_restore(on, Path(tmp) / "after", end)
        return out


def print_restore(r: dict[str, Any]) -> None:
    b, a, prev = r["before"], r["after"], r["previous_owner"]
    print(f"  data: {r['finished']:,} finished + {r['live']:,} live runs, "
          f"{r['runs_records']:,} runs records ({r['data']})")
    print(f"  before (full re-fold):   resumed after {fmt(b['resumed_s'])} s "
          f"({b['refolded_records']:,} records re-folded; group join "
          f"{fmt(b['ready_s'])} s)")
    print(f"  after (snapshot + tail): resumed after {fmt(a['resumed_s'])} s "
          f"({a['refolded_records']:,} records re-folded; snapshot of "
          f"{a.get('snapshot_entries', 0):,} entries read in {fmt(a.get('snapshot_read_s'))} "
          f"s); finished runs all queryable after {fmt(a.get('history_loaded_s'))} s "
          f"({a.get('history_entries') or 0:,} history entries in "
          f"{fmt(a.get('history_load_s'))} s, in the background)")
    print(f"  previous owner: history backfill of {prev['history_records']:,} entries "
          f"{fmt(prev['backfill_s'])} s (once), snapshot of {prev['snapshot_bytes']:,} "
          f"bytes written in {fmt(prev['snapshot_write_s'])} s")


def bench_restore_section(args: argparse.Namespace) -> dict[str, Any]:
    """Section ``restore`` of bench.all (its own dev broker unless ``--broker``)."""
    finished = getattr(args, "finished", None) or (20_000 if args.quick else 1_000_000)
    print(f"\n== restore: one partition, {finished:,} finished + 1,000 live runs, "
          "before and after", flush=True)
    r = bench_restore(args.broker, finished=finished)
    print_restore(r)
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.restore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--finished", type=int, help="finished runs (1000000; --quick 20000)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--broker", help="use this broker instead of a fresh dev broker")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)
    r = bench_restore_section(a)
    if a.json:
        a.json.write_text(json.dumps(jsonable(r), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
