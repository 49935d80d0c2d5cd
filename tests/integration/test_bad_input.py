"""Bad input never stops a partition: undecodable records on every topic go to the
dead-letter topic with their reason, and the records after them are processed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

import sdk
from tests.integration.harness import Stack
from topics.catalog import event_partition, partition_for

pytestmark = pytest.mark.kafka


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(broker, tmp_path, partitions=2)
    yield s
    s.close()


def test_undecodable_records_go_to_dlq_and_partitions_go_on(stack: Stack) -> None:
    cat = stack.catalog
    client = sdk.Client(app_id="bad", settings=stack.settings)

    @client.create_function(fn_id="echo", trigger=sdk.TriggerEvent(event="bad/echo"))
    async def echo(ctx: sdk.Context) -> int:
        return int(await ctx.step.run("double", lambda: ctx.event.data["n"] * 2))

    # Junk first, on the partitions the good records below will use.
    good_id = "bad-event-1"
    p = event_partition("bad/echo", stack.settings.partitions)
    stack.produce_raw(cat.events, b"\xc1 not msgpack", partition=p)
    stack.produce_raw(cat.functions, msgpack.packb({"k": "function.registered", "v": 1}))
    stack.produce_raw(cat.tasks, msgpack.packb({"k": "task", "v": 7}), partition=0)
    stack.produce_raw(cat.tasks, msgpack.packb({"k": "task", "v": 7}), partition=1)
    stack.produce_raw(cat.runs, msgpack.packb(["a", "list"]), partition=0)
    stack.produce_raw(cat.runs, msgpack.packb(["a", "list"]), partition=1)

    stack.start_engine()
    stack.start_worker(client)
    stack.wait_functions("bad-echo")
    [event_id] = client.send_sync(sdk.Event(name="bad/echo", data={"n": 21}, id=good_id))
    run = stack.finished_run(event_id)
    assert run["status"] == "completed" and run["output"] == 42

    dead = stack.dead_letters(expect=6)
    by_topic = {d.source_topic: d for d in dead}
    assert set(by_topic) == {cat.events, cat.functions, cat.tasks, cat.runs}
    assert "not valid msgpack" in by_topic[cat.events].reason
    assert by_topic[cat.events].value == b"\xc1 not msgpack"
    assert "missing field" in by_topic[cat.functions].reason
    assert "unsupported version" in by_topic[cat.tasks].reason
    assert "must be a map" in by_topic[cat.runs].reason
    # Both runs partitions went on past their junk.
    ids = client.send_sync([sdk.Event(name="bad/echo", data={"n": i}) for i in range(10)])
    runs = [stack.finished_run(i) for i in ids]
    client.close()
    assert [r["output"] for r in runs] == [i * 2 for i in range(10)]
    used = {partition_for(r["partition_key"], stack.settings.partitions) for r in runs}
    assert used == {0, 1}
