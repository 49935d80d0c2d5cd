"""A function triggered by records of a topic stepstream does not own: each record
starts its run exactly once, also when the engine is killed (-9) mid-stream."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

import sdk
from tests.integration.harness import Api, Stack, wait_for

pytestmark = pytest.mark.kafka

RECORDS = 400


def test_each_record_starts_one_run_across_an_engine_kill(broker: str, tmp_path: Path
                                                           ) -> None:
    stack = Stack(broker, tmp_path)
    topic = stack.prefix + "user-orders"  # the user's own topic, not in our catalog
    admin = AdminClient({"bootstrap.servers": broker})
    for fut in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        fut.result(30)
    client = sdk.Client(app_id="src", settings=stack.settings)

    @client.create_function(fn_id="order", trigger=sdk.TriggerTopic(
        topic=topic, event="src/order", expression="event.data.n >= 0"))
    async def order(ctx: sdk.Context) -> Any:
        src = ctx.event.source or {}
        return await ctx.step.run("seen", lambda: {
            "n": ctx.event.data["n"], "at": [src["partition"], src["offset"]],
            "key": src["key"], "h": src["headers"].get("h")})

    try:
        api = Api(stack, tmp_path)
        engine_proc = stack.children[-1]
        # The worker registers after the engine started: the engine subscribes to the
        # topic when the function appears in its registry.
        stack.start_worker(client)
        stack.client = client
        producer = Producer({"bootstrap.servers": broker})
        sent = threading.Event()

        def produce() -> None:
            for n in range(RECORDS):
                producer.produce(topic, json.dumps({"n": n}).encode(), f"k{n}".encode(),
                                 headers=[("h", f"v{n}".encode())])
                producer.poll(0)
                time.sleep(0.005)
            assert producer.flush(30) == 0
            sent.set()
        feeder = threading.Thread(target=produce, daemon=True)
        feeder.start()

        def done() -> int:
            return sum(r["status"] == "Completed" for r in api.runs(function="src-order"))
        wait_for(lambda: done() >= 50, 60, "the first runs of source records")
        os.kill(engine_proc.pid, signal.SIGKILL)  # mid-stream
        engine_proc.wait(10)
        api = Api(stack, tmp_path)  # the same state folder
        feeder.join(60)
        assert sent.is_set()
        wait_for(lambda: done() >= RECORDS, 120, f"{RECORDS} runs")
        runs = api.runs(function="src-order")
        assert len(runs) == RECORDS, len(runs)  # none twice
        outputs = [r["output"] for r in runs]
        assert sorted(o["n"] for o in outputs) == list(range(RECORDS))  # none lost
        assert len({tuple(o["at"]) for o in outputs}) == RECORDS
        assert all(o["key"] == f"k{o['n']}" and o["h"] == f"v{o['n']}" for o in outputs)
    finally:
        stack.close()
        client.close()


def test_a_record_that_is_not_json_is_dead_lettered_and_reading_goes_on(
        broker: str, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path)
    topic = stack.prefix + "user-raw"
    admin = AdminClient({"bootstrap.servers": broker})
    for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        fut.result(30)
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(topic, b"\x00\x01 not json")
    producer.produce(topic, b'{"ok": true}')
    assert producer.flush(10) == 0
    client = sdk.Client(app_id="raw", settings=stack.settings)

    @client.create_function(fn_id="rec", trigger=sdk.TriggerTopic(topic=topic))
    async def rec(ctx: sdk.Context) -> Any:
        return ctx.event.data

    try:
        stack.start_engine()
        stack.start_worker(client)
        stack.client = client
        [letter] = stack.dead_letters(1)
        assert letter.source_topic == topic and letter.offset == 0
        assert "is not an event: not valid JSON" in letter.reason
        assert stack.engine is not None

        def completed() -> list[dict[str, Any]]:
            assert stack.engine is not None
            return [r for r in stack.engine.queries.list_runs(10)
                    if r["status"] == "completed"]
        [run] = wait_for(completed, 60, "the run of the good record")
        assert run["output"] == {"ok": True} and run["event"]["name"] == f"kafka/{topic}"
    finally:
        stack.close()
        client.close()
