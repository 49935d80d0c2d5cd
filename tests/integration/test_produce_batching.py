"""The engine's producer sends one round's records in one Produce request per partition
(librdkafka never puts two partitions in one request), on the real broker."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from engine.runtime.processor import Processor, producer_config
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.kafka


class ProduceRequests:
    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __call__(self, raw: str) -> None:
        with self.lock:
            self.stats = json.loads(raw)

    def counts(self) -> tuple[int, int]:
        """(Produce requests sent, records delivered) so far."""
        with self.lock:
            brokers = self.stats.get("brokers", {}).values()
            return (sum(int(b.get("req", {}).get("Produce", 0)) for b in brokers),
                    int(self.stats.get("txmsgs", 0)))


def test_a_round_of_records_goes_in_one_request_per_partition(broker: str,
                                                              tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path, partitions=2)
    processor = Processor(stack.settings, tmp_path / "state")
    seen = ProduceRequests()
    processor.producer = Producer({**producer_config(stack.settings),
                                   "statistics.interval.ms": 50, "stats_cb": seen})
    try:
        tasks = stack.catalog.tasks
        # Connected, with its producer id: until then every record waits, whatever linger.
        processor._produce_all([(tasks, p, "warm", b"") for p in (0, 1)])
        wait_for(lambda: processor.producer.poll(0.05) or seen.counts()[1] >= 2, 30,
                 "the warm-up records' statistics")
        before, _ = seen.counts()
        # As a busy round emits: thousands of records, over two partitions, interleaved.
        out = [(tasks, i % 2, f"run-{i}", b"x" * 200) for i in range(2000)]
        processor._produce_all(out)

        def delivered() -> tuple[int, int] | None:
            processor.producer.poll(0.05)  # serves the stats callback
            requests, records = seen.counts()
            return (requests - before, records) if records >= len(out) + 2 else None
        requests, _records = wait_for(delivered, 30, "statistics of the delivered round")
        assert requests == 2
    finally:
        processor._shutdown()
