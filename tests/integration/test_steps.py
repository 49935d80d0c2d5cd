"""The step surface end to end on the real broker: one engine and one worker for the
module, each test with its own functions and event names."""

from __future__ import annotations

import datetime
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import sdk
from tests.integration.harness import Stack, app_stack
from topics.catalog import partition_for
from topics.settings import Settings

pytestmark = pytest.mark.kafka

calls: Counter[str] = Counter()
lock = threading.Lock()


def count(name: str) -> int:
    with lock:
        calls[name] += 1
        return calls[name]


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="steps", settings=settings)

    def validate(order_id: int) -> dict[str, Any]:
        count("validate")
        return {"order_id": order_id}

    async def charge(order: dict[str, Any]) -> dict[str, Any]:
        count("charge")
        return {"id": f"ch_{order['order_id']}"}

    @client.create_function(fn_id="process-order", retries=3, trigger=sdk.TriggerEvent(
        event="shop/order.*", expression="event.data.total > 0"))
    async def process_order(ctx: sdk.Context) -> dict[str, Any]:
        order = await ctx.step.run("validate", validate, ctx.event.data["order_id"])
        ch = await ctx.step.run("charge", charge, order)
        await ctx.step.sleep("cool-off", datetime.timedelta(milliseconds=700))
        await ctx.step.send_event("notify", sdk.Event(name="shop/charged",
                                                      data={"id": ch["id"]}))
        a, b = await ctx.step.parallel((lambda: ctx.step.run("a", lambda: "A"),
                                        lambda: ctx.step.run("b", lambda: "B")))
        return {"charge": ch["id"], "a": a, "b": b}

    @client.create_function(fn_id="on-charged", trigger=sdk.TriggerEvent(event="shop/charged"))
    async def on_charged(ctx: sdk.Context) -> str:
        return f"saw {ctx.event.data['id']}"

    @client.create_function(fn_id="flaky", retries=4,
                            trigger=sdk.TriggerEvent(event="test/flaky"))
    async def flaky(ctx: sdk.Context) -> int:
        def attempt() -> int:
            n = count("flaky:" + ctx.run_id)
            if n <= 2:
                raise ConnectionError(f"attempt {n} failed")
            return n
        return await ctx.step.run("call", attempt)

    @client.create_function(fn_id="fatal", retries=4, trigger=sdk.TriggerEvent(event="test/fatal"))
    async def fatal(ctx: sdk.Context) -> None:
        def boom() -> None:
            count("fatal:" + ctx.run_id)
            raise sdk.NonRetriableError("card declined")
        await ctx.step.run("charge", boom)

    @client.create_function(fn_id="later", retries=2, trigger=sdk.TriggerEvent(event="test/later"))
    async def later(ctx: sdk.Context) -> float:
        def once() -> float:
            if count("later:" + ctx.run_id) == 1:
                raise sdk.RetryAfterError("rate limited", datetime.timedelta(seconds=1.5))
            return time.time()
        return await ctx.step.run("call", once)

    @client.create_function(fn_id="catcher", retries=1,
                            trigger=sdk.TriggerEvent(event="test/catch"))
    async def catcher(ctx: sdk.Context) -> dict[str, Any]:
        def always() -> None:
            raise ValueError("nope")
        try:
            await ctx.step.run("doomed", always)
        except sdk.StepError as err:
            return {"caught": err.name, "message": err.message}
        return {"caught": None}

    @client.create_function(fn_id="loop", trigger=sdk.TriggerEvent(event="test/loop"))
    async def loop(ctx: sdk.Context) -> list[int]:
        return [await ctx.step.run("item", lambda i=i: i * 10) for i in range(3)]

    @client.create_function(fn_id="unserializable",
                            trigger=sdk.TriggerEvent(event="test/unserializable"))
    async def unserializable(ctx: sdk.Context) -> None:
        await ctx.step.run("make-set", lambda: {1, 2, 3})

    @client.create_function(fn_id="filtered", trigger=[
        sdk.TriggerEvent(event="filter/*", expression="event.data.vip == true")])
    async def filtered(ctx: sdk.Context) -> str:
        return ctx.event.name

    return client


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app_stack(broker, tmp_path_factory.mktemp("steps"), make_client,
                   [f"steps-{f}" for f in ("process-order", "on-charged", "flaky", "fatal",
                                           "later", "catcher", "loop", "unserializable",
                                           "filtered")]) as s:
        yield s


def ids_on_one_partition(stack: Stack, n: int) -> list[str]:
    """Event ids that all land on one partition of ``events``, so they are routed in order."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        candidate = f"{stack.prefix}ev-{i}"
        if partition_for(candidate, stack.settings.partitions) == 0:
            out.append(candidate)
        i += 1
    return out


def test_example_completes_with_the_right_output(stack: Stack) -> None:
    event_id = stack.send("shop/order.created", {"order_id": 7, "total": 12.5})
    run = stack.finished_run(event_id)
    assert run["status"] == "completed", run["error"]
    assert run["output"] == {"charge": "ch_7", "a": "A", "b": "B"}
    assert run["fn_id"] == "steps-process-order"
    assert list(run["step_order"]) == ["validate", "charge", "cool-off", "notify", "a", "b"]
    # Every step ran once: memoized outcomes are never re-executed on later passes.
    assert all(len(s["attempts"]) == 1 for s in run["steps"].values())
    # The sleep never woke early.
    nap = run["steps"]["cool-off"]
    fired = [e for e in run["timeline"] if e["type"] == "timer.fired"]
    assert fired and fired[0]["at"] >= nap["until_ms"]
    scheduled = next(e for e in run["timeline"] if e["type"] == "sleep.scheduled")
    assert nap["until_ms"] - scheduled["at"] >= 600
    # send_event triggered the other function with the charge id.
    [sent_id] = run["steps"]["notify"]["output"]
    child = stack.finished_run(sent_id)
    assert child["fn_id"] == "steps-on-charged"
    assert child["output"] == "saw ch_7"


def test_step_failing_twice_then_succeeding(stack: Stack) -> None:
    run = stack.finished_run(stack.send("test/flaky", {}))
    assert run["status"] == "completed" and run["output"] == 3
    attempts = run["steps"]["call"]["attempts"]
    assert [a["error"] is not None for a in attempts] == [True, True, False]
    assert "attempt 1 failed" in attempts[0]["error"]["message"]
    retries = [e for e in run["timeline"] if e["type"] == "step.retry_scheduled"]
    assert len(retries) == 2


def test_non_retriable_error_fails_the_run_at_once(stack: Stack) -> None:
    run = stack.finished_run(stack.send("test/fatal", {}))
    assert run["status"] == "failed"
    assert run["error"]["name"] == "NonRetriableError"
    assert "card declined" in run["error"]["message"]
    assert calls["fatal:" + run["run_id"]] == 1
    assert len(run["steps"]["charge"]["attempts"]) == 1


def test_retry_after_waits_at_least_its_time(stack: Stack) -> None:
    run = stack.finished_run(stack.send("test/later", {}))
    assert run["status"] == "completed"
    first, second = run["steps"]["call"]["attempts"]
    assert second["ended_at"] - first["ended_at"] >= 1500
    fired = next(e for e in run["timeline"] if e["type"] == "timer.fired")
    assert fired["detail"]["late_ms"] >= 0


def test_step_error_is_catchable(stack: Stack) -> None:
    run = stack.finished_run(stack.send("test/catch", {}))
    assert run["status"] == "completed"
    assert run["output"] == {"caught": "ValueError", "message": "nope"}
    assert len(run["steps"]["doomed"]["attempts"]) == 2  # first try + 1 retry


def test_repeated_step_ids_are_told_apart(stack: Stack) -> None:
    run = stack.finished_run(stack.send("test/loop", {}))
    assert run["output"] == [0, 10, 20]
    assert run["step_order"] == ["item", "item:1", "item:2"]


def test_unserializable_output_fails_naming_the_step(stack: Stack) -> None:
    run = stack.finished_run(stack.send("test/unserializable", {}))
    assert run["status"] == "failed"
    step = run["steps"]["make-set"]
    assert step["status"] == "failed"
    assert "make-set" in step["error"]["message"]
    assert "set" in step["error"]["message"]


def test_wildcard_and_cel_filter_select_the_right_runs(stack: Stack) -> None:
    ids = ids_on_one_partition(stack, 5)
    vip = stack.send("filter/signup", {"vip": True}, ids[0])
    plain = stack.send("filter/signup", {"vip": False}, ids[1])
    missing = stack.send("filter/other", {}, ids[2])
    zero_total = stack.send("shop/order.created", {"order_id": 1, "total": 0}, ids[3])
    assert stack.finished_run(vip)["output"] == "filter/signup"
    # The marker is routed after the others (same partition), so once it has a run the
    # engine has decided on every earlier event.
    marker = stack.send("filter/marker", {"vip": True}, ids[4])
    stack.finished_run(marker)
    for event_id in (plain, missing, zero_total):
        assert stack.runs_for(event_id) == []
