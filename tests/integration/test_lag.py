"""``GET /health`` reports the engine's consumer lag: above zero while it works through a
backlog, zero once it has caught up (so a slow engine does not look like lost runs)."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from engine.cli.devbroker import free_port
from tests.integration.harness import Stack, wait_for
from topics.catalog import partition_for
from topics.codec import encode
from topics.records import Event

pytestmark = pytest.mark.kafka

BACKLOG = 40_000


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(broker, tmp_path)
    yield s
    s.close()


def health(port: int) -> dict[str, Any] | None:
    try:
        return dict(Stack.api_at(port, "/health"))
    except (urllib.error.URLError, ConnectionError):
        return None  # not listening yet


def test_health_reports_lag_while_behind_and_zero_once_caught_up(stack: Stack) -> None:
    # The backlog is on `events` before the engine starts, so its first samples must
    # find it behind; nothing triggers on these events, the engine only routes them.
    p = Producer({"bootstrap.servers": stack.settings.brokers, "linger.ms": 20})
    for i in range(BACKLOG):
        event_id = f"lag-{i:06d}"
        p.produce(stack.catalog.events, encode(Event(name="lag/noise", data={"i": i},
                                                     id=event_id, ts=1_700_000_000_000)),
                  event_id, partition=partition_for(event_id, stack.settings.partitions))
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0

    port = free_port()
    stack.spawn("engine", "--port", str(port), "--state-dir", str(stack.tmp / "state"),
                "--no-create-topics", log="engine")

    def behind() -> dict[str, Any] | None:
        lag = (health(port) or {}).get("consumer_lag")
        return lag if lag and (lag["events"] or 0) > 0 else None

    seen = wait_for(behind, 60, "/health to report lag on events")
    assert 0 < seen["events"] <= BACKLOG
    assert seen["total"] >= seen["events"]

    def caught_up() -> dict[str, Any] | None:
        lag = (health(port) or {}).get("consumer_lag")
        return lag if lag and lag["total"] == 0 else None

    done = wait_for(caught_up, 120, "/health to report zero lag")
    # Every routed event left a copy on `waits`, which the engine has folded too.
    assert done["events"] == done["runs"] == done["waits"] == 0
    assert done["sampled_ms_ago"] < 5000
