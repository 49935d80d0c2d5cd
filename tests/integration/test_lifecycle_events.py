"""Which runs' ``stepstream/function.*`` events reach the ``events`` topic, on the real
broker: only those a trigger listens to (the default, ``listened``), or every run's
(``all``); waits on those names are answered either way."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

import sdk
from tests.integration.harness import Stack, wait_for
from topics.codec import decode
from topics.records import Event
from topics.settings import Settings

pytestmark = pytest.mark.kafka

FNS = ("plain", "doomed", "failure-waiter", "finish-waiter", "watched", "watcher",
       "cancelled-by-finish")


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="lc", settings=settings)

    @client.create_function(fn_id="plain", trigger=sdk.TriggerEvent(event="lc/plain"))
    async def plain(ctx: sdk.Context) -> Any:
        return await ctx.step.run("one", lambda: ctx.event.data)

    @client.create_function(fn_id="doomed", retries=0, trigger=sdk.TriggerEvent(event="lc/doomed"))
    async def doomed(ctx: sdk.Context) -> None:
        raise sdk.NonRetriableError("doomed " + ctx.event.data["marker"])

    # Nothing in this app triggers on function.failed: its events reach only waits.
    @client.create_function(fn_id="failure-waiter",
                            trigger=sdk.TriggerEvent(event="lc/await-failure"))
    async def failure_waiter(ctx: sdk.Context) -> Any:
        failed = await ctx.step.wait_for_event(
            "failed", event="stepstream/function.failed",
            timeout=datetime.timedelta(seconds=30),
            if_exp="async.data.event.data.marker == event.data.marker")
        return None if failed is None else failed.data

    @client.create_function(fn_id="finish-waiter",
                            trigger=sdk.TriggerEvent(event="lc/await-finish"))
    async def finish_waiter(ctx: sdk.Context) -> Any:
        done = await ctx.step.wait_for_event(
            "done", event="stepstream/function.finished",
            timeout=datetime.timedelta(seconds=30),
            if_exp="async.data.event.data.marker == event.data.marker")
        return None if done is None else done.data

    @client.create_function(fn_id="watched", trigger=sdk.TriggerEvent(event="lc/watched"))
    async def watched(ctx: sdk.Context) -> str:
        return "seen " + ctx.event.data["marker"]

    @client.create_function(fn_id="watcher", trigger=sdk.TriggerEvent(
        event="stepstream/function.finished", expression="event.data.function_id == 'lc-watched'"))
    async def watcher(ctx: sdk.Context) -> Any:
        return ctx.event.data.get("output")

    # A cancel rule on a lifecycle name: a wait too, on the same `waits` record.
    @client.create_function(fn_id="cancelled-by-finish", trigger=sdk.TriggerEvent(
        event="lc/cancellable"), cancel=[sdk.Cancel(
            event="stepstream/function.failed",
            if_exp="async.data.event.data.marker == event.data.marker")])
    async def cancelled_by_finish(ctx: sdk.Context) -> str:
        await ctx.step.sleep("long", datetime.timedelta(seconds=60))
        return "never"

    return client


def start(broker: str, tmp: Path, mode: str) -> tuple[Stack, sdk.Client]:
    stack = Stack(broker, tmp, backoff_ms=100)
    stack.settings = dataclasses.replace(stack.settings, lifecycle_events=mode)
    stack.start_engine()
    client = make_client(stack.settings)
    stack.start_worker(client)
    stack.client = client
    stack.wait_functions(*[f"lc-{f}" for f in FNS])
    return stack, client


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s, client = start(broker, tmp_path_factory.mktemp("lc"), "listened")
    try:
        yield s
    finally:
        s.close()
        client.close()


def lifecycle_events_on(stack: Stack, topic: str, run_id: str) -> list[str]:
    """The names of the function.* events about ``run_id`` on ``topic`` (read whole)."""
    settings = stack.settings
    c = Consumer({"bootstrap.servers": settings.brokers, "group.id": uuid.uuid4().hex,
                  "enable.auto.commit": False, "enable.partition.eof": True})
    parts = [TopicPartition(topic, p, 0) for p in range(settings.partitions)]
    c.assign(parts)
    pending = {p.partition for p in parts}
    names: list[str] = []
    try:
        def read_to_end() -> bool:
            for m in c.consume(1000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                    continue
                rec = decode(m.value())
                if isinstance(rec, Event) and rec.data.get("run_id") == run_id:
                    names.append(rec.name)
            return not pending
        wait_for(read_to_end, 30, f"the end of {topic}")
    finally:
        c.close()
    return sorted(names)


def waiting_on_event(stack: Stack, event_id: str) -> dict[str, Any]:
    def waiting() -> dict[str, Any] | None:
        runs = stack.runs_for(event_id)
        w = runs[0].get("waiting") if runs else None
        return runs[0] if w and w.get("kind") in ("event", "timer") else None
    return wait_for(waiting, 30, "the run to wait")


def test_a_run_nobody_listens_to_sends_no_lifecycle_event_to_events(stack: Stack) -> None:
    run = stack.finished_run(stack.send("lc/plain", {"n": 1}))
    assert run["status"] == "completed"
    assert lifecycle_events_on(stack, stack.catalog.events, run["run_id"]) == []
    # The one record kept: on `waits`, where a wait on the name would see it.
    assert lifecycle_events_on(stack, stack.catalog.waits, run["run_id"]) == [
        "stepstream/function.finished"]


def test_a_function_triggered_by_function_finished_still_gets_it(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    run = stack.finished_run(stack.send("lc/watched", {"marker": marker}))

    def watcher_run() -> list[dict[str, Any]]:
        return [r for r in stack.engine.queries.list_runs(1000)  # type: ignore[union-attr]
                if r["fn_id"] == "lc-watcher" and r["status"] == "completed"
                and r["output"] == f"seen {marker}"]
    wait_for(watcher_run, 30, "the watcher's run")
    assert lifecycle_events_on(stack, stack.catalog.events, run["run_id"]) == [
        "stepstream/function.finished"]


def test_a_wait_on_function_failed_resolves_with_no_trigger_on_it(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    waiter = stack.send("lc/await-failure", {"marker": marker})
    waiting_on_event(stack, waiter)
    failed = stack.finished_run(stack.send("lc/doomed", {"marker": marker}))
    assert failed["status"] == "failed"
    run = stack.finished_run(waiter)
    assert run["status"] == "completed", run["error"]
    assert run["output"]["run_id"] == failed["run_id"]
    assert run["output"]["error"]["message"] == f"doomed {marker}"
    assert "stepstream/function.failed" not in lifecycle_events_on(
        stack, stack.catalog.events, failed["run_id"])


def test_a_wait_on_function_finished_resolves(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    waiter = stack.send("lc/await-finish", {"marker": marker})
    waiting_on_event(stack, waiter)
    done = stack.finished_run(stack.send("lc/plain", {"marker": marker}))
    run = stack.finished_run(waiter)
    assert run["status"] == "completed", run["error"]
    assert run["output"]["run_id"] == done["run_id"]


def test_a_cancel_rule_on_function_failed_still_cancels(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    sleeper = stack.send("lc/cancellable", {"marker": marker})
    waiting_on_event(stack, sleeper)  # asleep: its cancel rule was registered first
    stack.finished_run(stack.send("lc/doomed", {"marker": marker}))
    run = stack.finished_run(sleeper)
    assert run["status"] == "cancelled"
    assert run["cancelled_by"]["kind"] == "event"


def test_the_setting_all_sends_every_run_s_lifecycle_events(
        broker: str, tmp_path: Path) -> None:
    s, client = start(broker, tmp_path, "all")
    try:
        plain = s.finished_run(s.send("lc/plain", {"n": 2}))
        doomed = s.finished_run(s.send("lc/doomed", {"marker": "x"}))
        assert lifecycle_events_on(s, s.catalog.events, plain["run_id"]) == [
            "stepstream/function.finished"]
        assert lifecycle_events_on(s, s.catalog.events, doomed["run_id"]) == [
            "stepstream/function.failed", "stepstream/function.finished"]
    finally:
        s.close()
        client.close()
