"""STEPSTREAM_PRODUCER_STATS_MS: a stepstream producer reports what it sent (records,
produce requests) when it closes, counted by librdkafka against the real broker."""

from __future__ import annotations

import logging
import uuid

import pytest

from engine.cli.provision import ensure_topics
from sdk._producer import Producer
from topics.catalog import Catalog
from topics.producer_stats import parse_line
from topics.settings import Settings

pytestmark = pytest.mark.kafka


def test_a_producer_reports_its_records_and_produce_requests_at_close(
        broker: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(brokers=broker, prefix=f"t{uuid.uuid4().hex[:8]}.",
                        producer_stats_ms=100)
    caplog.set_level(logging.INFO, logger="stepstream.stats")
    ensure_topics(settings)
    producer = Producer(settings, client_id="stats-test")
    for i in range(25):
        producer.produce(Catalog(settings).events, f"k{i}", b"v")
    assert producer.flush(30) == 0
    producer.close()
    finals = [parse_line(r.getMessage()) for r in caplog.records
              if r.getMessage().endswith(" final")]
    assert len(finals) == 1 and finals[0] is not None
    client, counts = finals[0]
    assert client == "stats-test"
    assert counts.records == 25
    assert 1 <= counts.produce_requests <= 25
    assert counts.requests > counts.produce_requests  # metadata, init-producer-id, ...
