"""Poison input: a record too large to process, on any topic the engine reads, becomes a
dead letter that fits (its size, reason and a bounded prefix), and the partition goes on,
also after the engine restarts."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

import sdk
from tests.integration.harness import Stack, wait_for
from topics.catalog import partition_for
from topics.codec import encode
from topics.settings import MIB

pytestmark = pytest.mark.kafka

OVERSIZED = 9 * MIB


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(broker, tmp_path, partitions=2)
    yield s
    s.close()


def make_client(settings: Any) -> sdk.Client:
    client = sdk.Client(app_id="poison", settings=settings)

    @client.create_function(fn_id="echo", trigger=sdk.TriggerEvent(event="poison/echo"))
    async def echo(ctx: sdk.Context) -> int:
        return int(await ctx.step.run("double", lambda: ctx.event.data["n"] * 2))

    @client.create_function(fn_id="waiter", trigger=sdk.TriggerEvent(event="poison/wait"))
    async def waiter(ctx: sdk.Context) -> Any:
        got = await ctx.step.wait_for_event("go", event="poison/go", match="data.key",
                                            timeout=datetime.timedelta(seconds=60))
        return None if got is None else got.data["key"]

    return client


def produce_big(stack: Stack, topic: str, partition: int, size: int) -> None:
    # The broker's topics take records up to max_record_bytes + 64 KiB: past that the
    # broker refuses, so the oversized ones are written as a misbehaving client with a
    # raised limit would write them on a broker configured larger.
    p = Producer({"bootstrap.servers": stack.settings.brokers,
                  "message.max.bytes": size + MIB})
    p.produce(topic, b"\x00" * size, b"big", partition=partition)
    assert p.flush(30) == 0


def test_oversized_records_on_every_topic_are_dead_lettered_and_partitions_go_on(
        stack: Stack, tmp_path: Path) -> None:
    cat, limit = stack.catalog, stack.settings.max_record_bytes
    # tasks: read by the worker, which dead-letters with the same builder.
    sources = [(t, p) for t in (cat.events, cat.runs, cat.waits, cat.tasks) for p in (0, 1)]
    sources.append((cat.functions, 0))
    for topic, p in sources:
        produce_big(stack, topic, p, OVERSIZED)
    # Just under the limit: decodable size, undecodable bytes; its dead letter with the
    # whole value and the envelope would be over the limit.
    near = limit - 16
    produce_big(stack, cat.events, 0, near)

    state = tmp_path / "state"
    stack.start_engine(state)
    client = make_client(stack.settings)
    stack.client = client
    stack.start_worker(client)
    stack.wait_functions("poison-echo", "poison-waiter")

    dead = stack.dead_letters(expect=len(sources) + 1, timeout=60)
    assert sorted((d.source_topic, d.partition) for d in dead) == sorted(
        [*sources, (cat.events, 0)])
    for d in dead:
        size = d.extra["value_bytes"]
        assert size in (OVERSIZED, near), d.extra
        assert d.extra["truncated"] is True
        assert len(encode(d)) <= limit
        assert d.value is not None and 0 < len(d.value) < size
        assert d.value == b"\x00" * len(d.value)
        if size == OVERSIZED:
            assert "over the" in d.reason and str(OVERSIZED) in d.reason, d.reason

    # Every partition goes on: runs on both runs partitions, a wait resolved.
    ids = [stack.send("poison/echo", {"n": i}) for i in range(8)]
    runs = [stack.finished_run(i, timeout=60) for i in ids]
    assert [r["output"] for r in runs] == [i * 2 for i in range(8)]
    assert {partition_for(r["partition_key"], 2) for r in runs} == {0, 1}
    waiting = stack.send("poison/wait", {"key": "k1"})
    wait_for(lambda: (stack.runs_for(waiting) or [{}])[0].get("waiting", {}) and
             stack.runs_for(waiting)[0]["waiting"].get("kind") == "event", 30, "the wait")
    stack.send("poison/go", {"key": "k1"})
    assert stack.finished_run(waiting)["output"] == "k1"
    assert stack.engine is not None
    for p in (0, 1):
        assert stack.engine.processor.wait_stores[p].next_offset() > 0

    # A restart finds nothing left to choke on and keeps working.
    stack.engine.stop()
    assert stack.engine.error is None
    stack.start_engine(state)
    again = stack.send("poison/echo", {"n": 50})
    assert stack.finished_run(again, timeout=60)["output"] == 100
    assert stack.engine.alive and stack.engine.error is None
    client.close()


def test_an_emitted_record_over_the_limit_is_dead_lettered_not_fatal(stack: Stack,
                                                                     tmp_path: Path) -> None:
    """The last guard: whatever the fold emits that is over the record limit (it bounds
    tasks and outputs itself) becomes a bounded dead letter, and the records produced beside
    it are written, instead of the producer refusing it on every restart."""
    from confluent_kafka import Consumer, TopicPartition

    from engine.runtime.processor import Processor

    processor = Processor(stack.settings, tmp_path / "guard")
    limit = stack.settings.max_record_bytes
    processor._produce_all([(stack.catalog.tasks, 0, "run-1", b"\x01" * (limit + 1)),
                            (stack.catalog.tasks, 1, "run-2", b"beside it")])
    (dead,) = stack.dead_letters(expect=1)
    assert dead.source_topic == stack.catalog.tasks
    assert dead.extra["value_bytes"] == limit + 1 and dead.extra["truncated"] is True
    assert "record limit" in dead.reason and dead.key == b"run-1"
    assert len(encode(dead)) <= limit
    reader = Consumer({"bootstrap.servers": stack.settings.brokers, "group.id": "guard",
                       "enable.partition.eof": True})
    reader.assign([TopicPartition(stack.catalog.tasks, 1, 0)])
    try:
        got = wait_for(lambda: [m.value() for m in reader.consume(10, 0.2) if not m.error()],
                       30, "the record produced beside it")
    finally:
        reader.close()
    assert got == [b"beside it"]
