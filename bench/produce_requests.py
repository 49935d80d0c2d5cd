"""Records and engine produce requests per 3-step run, on a fresh dev broker.

``python -m bench.produce_requests [--runs N] [--burst N]`` starts a Tansu dev broker,
an in-process engine whose producer reports librdkafka statistics (``stats_cb``), and
one in-process worker running :mod:`bench.pipeline_app`. It then runs N runs one at a
time (nothing shares a request: the worst case) and a burst of M runs sent at once,
and prints, per run: the records on each topic (read back from offset 0) and the
Produce requests the engine's producer sent (``brokers[*].req.Produce``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

import sdk
from bench import pipeline_app
from bench.common import read_topics
from engine.app import Engine
from engine.cli.devbroker import DevBroker
from engine.cli.provision import ensure_topics
from engine.runtime.processor import producer_config
from topics.catalog import Catalog
from topics.settings import Settings

TERMINAL = ("completed", "failed", "cancelled")


class Stats:
    """The latest librdkafka statistics of one producer."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __call__(self, raw: str) -> None:
        with self.lock:
            self.latest = json.loads(raw)

    def produce_requests(self) -> int:
        with self.lock:
            return sum(int(b.get("req", {}).get("Produce", 0))
                       for b in self.latest.get("brokers", {}).values())

    def messages(self) -> int:
        with self.lock:
            return int(self.latest.get("txmsgs", 0))


def settled(producer: Producer, stats: Stats, quiet_s: float = 1.0) -> tuple[int, int]:
    """Serve the stats callback until the engine has produced nothing for ``quiet_s``
    (the last runs' endings and what they trigger are routed in later loop rounds)."""
    last, since = (-1, -1), time.monotonic()
    while True:
        producer.poll(0.15)
        now = (stats.produce_requests(), stats.messages())
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now


def count_records(settings: Settings) -> Counter[str]:
    catalog = Catalog(settings)
    topics = [catalog.events, catalog.runs, catalog.tasks, catalog.waits, catalog.dlq]
    return Counter((m.topic() or "").removeprefix(settings.prefix)
                   for m in read_topics(settings, topics))


def wait_done(engine: Engine, event_ids: list[str], timeout: float) -> None:
    pending = set(event_ids)
    deadline = time.monotonic() + timeout
    while pending:
        for eid in list(pending):
            runs = engine.queries.runs_for_event(eid)
            if runs and runs[0]["status"] in TERMINAL:
                pending.discard(eid)
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} runs not finished after {timeout}s")
        time.sleep(0.02)


def phase(name: str, n: int, send: Any, engine: Engine, stats: Stats,
          settings: Settings) -> None:
    before_req, before_msgs = settled(engine.processor.producer, stats)
    before = count_records(settings)
    started = time.monotonic()
    send(n)
    after_req, after_msgs = settled(engine.processor.producer, stats)
    took = time.monotonic() - started
    after = count_records(settings)
    records = {t: (after[t] - before[t]) / n for t in sorted(after) if after[t] - before[t]}
    print(f"{name}: {n} runs in {took:.1f}s")
    print(f"  records per run: {sum(records.values()):.2f} "
          + " ".join(f"{t}={v:.2f}" for t, v in records.items()))
    print(f"  engine: {(after_msgs - before_msgs) / n:.2f} records and "
          f"{(after_req - before_req) / n:.2f} produce requests per run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50, help="runs one at a time")
    parser.add_argument("--burst", type=int, default=1000, help="runs sent at once")
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    with DevBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(brokers=broker.address, prefix="prq.", partitions=args.partitions)
        ensure_topics(settings)
        engine = Engine(settings, Path(tmp) / "state")
        stats = Stats()
        engine.processor.producer = Producer({
            **producer_config(settings), "statistics.interval.ms": 100, "stats_cb": stats})
        engine.start()
        assert engine.wait_ready(60), "engine got no partitions"
        app = sdk.Client(pipeline_app.APP_ID, settings=settings)
        app._functions = dict(pipeline_app.client._functions)  # the bench app's function
        worker = app.worker(concurrency=100)
        thread = threading.Thread(target=lambda: asyncio.run(worker.run_async()), daemon=True)
        thread.start()
        try:
            fn = f"{pipeline_app.APP_ID}-{pipeline_app.FN_ID}"
            deadline = time.monotonic() + 60
            while fn not in {f["id"] for f in engine.queries.functions()}:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"function {fn} not registered")
                time.sleep(0.05)

            def one_at_a_time(n: int) -> None:
                for i in range(n):
                    [eid] = app.send_sync(sdk.Event(name=pipeline_app.EVENT, data={"order_id": i}))
                    wait_done(engine, [str(eid)], 30)

            def burst(n: int) -> None:
                ids = app.send_sync([sdk.Event(name=pipeline_app.EVENT, data={"order_id": i})
                                for i in range(n)])
                wait_done(engine, [str(i) for i in ids], 300)

            one_at_a_time(3)  # warm up: connections, metadata, the worker's assignment
            phase("one at a time", args.runs, one_at_a_time, engine, stats, settings)
            if args.burst:
                phase("burst", args.burst, burst, engine, stats, settings)
        finally:
            worker.stop()
            thread.join(30)
            engine.stop()
            app.close()


if __name__ == "__main__":
    main()
