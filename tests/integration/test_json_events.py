"""Events produced as plain JSON by any Kafka producer start runs like events sent over
HTTP; anything else is dead-lettered with a reason naming the accepted formats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

import sdk
from tests.integration.harness import Stack, app_stack, wait_for
from topics.settings import Settings

pytestmark = pytest.mark.kafka


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="js", settings=settings)

    @client.create_function(fn_id="echo", trigger=sdk.TriggerEvent(event="js/order"))
    async def echo(ctx: sdk.Context) -> Any:
        return await ctx.step.run("echo", lambda: ctx.event.data)

    return client


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("json-events")
    with app_stack(broker, tmp, make_client, ["js-echo"]) as s:
        yield s


def produce(stack: Stack, values: list[bytes], key: bytes | None = None) -> None:
    """A plain producer with its default partitioner, as kcat or a Java client would."""
    p = Producer({"bootstrap.servers": stack.settings.brokers})
    for v in values:
        p.produce(stack.catalog.events, v, key)
    assert p.flush(10) == 0


def runs_of(stack: Stack) -> list[dict[str, Any]]:
    assert stack.engine is not None
    return stack.engine.queries.list_runs(1000)


def test_json_events_from_a_plain_producer_start_runs_once(stack: Stack) -> None:
    produce(stack, [json.dumps({"name": "js/order", "data": {"n": n}}).encode()
                    for n in range(5)])
    # With its own id, sent twice (a producer retry): one run.
    with_id = json.dumps({"name": "js/order", "data": {"n": 99}, "id": "order-99"}).encode()
    produce(stack, [with_id, with_id], key=b"order-99")

    def completed() -> list[dict[str, Any]] | None:
        runs = [r for r in runs_of(stack) if r["status"] == "completed"]
        return runs if len(runs) >= 6 else None
    runs = wait_for(completed, 60, "six runs of JSON events")
    assert sorted(r["output"]["n"] for r in runs) == [0, 1, 2, 3, 4, 99]
    assert [r["event"]["id"] for r in runs if r["output"]["n"] == 99] == ["order-99"]


def test_bad_json_goes_to_the_dead_letter_topic_with_a_clear_reason(stack: Stack) -> None:
    produce(stack, [b'{"name": "js/order", "data": [1, 2]}', b"<xml/>"])
    letters = stack.dead_letters(2)
    reasons = sorted(d.reason for d in letters if d.source_topic == stack.catalog.events)
    assert len(reasons) == 2
    assert all("Accepted: stepstream's own msgpack event records, or a UTF-8 JSON object"
               in r for r in reasons)
    assert any("'data' must be a JSON object, got an array" in r for r in reasons)
    assert any("not a JSON object either" in r for r in reasons)
    # The partition goes on: a good event after them still starts its run.
    produce(stack, [json.dumps({"name": "js/order", "data": {"n": 7}, "id": "after"}).encode()])
    wait_for(lambda: any(r["event"]["id"] == "after" and r["status"] == "completed"
                         for r in runs_of(stack)), 60, "the run of an event after them")
