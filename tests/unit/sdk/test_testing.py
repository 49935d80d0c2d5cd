"""sdk.testing: a function run to its end with no broker, as the engine would run it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import sdk

NOW = 1_700_000_000_000
client = sdk.Client(app_id="shop", brokers="unused:9092")
ORDER = sdk.Event(name="shop/order.created", data={"order_id": 7})
calls: list[str] = []


def charge(order_id: int, cents: int) -> dict[str, Any]:
    calls.append(f"charge {order_id}")
    return {"charged": cents}


@client.create_function(fn_id="order", trigger=sdk.TriggerEvent(event="shop/order.created"),
                        retries=2)
async def order(ctx: sdk.Context) -> dict[str, Any]:
    receipt = await ctx.step.run("charge", charge, ctx.event.data["order_id"], 500)
    await ctx.step.sleep("cool-off", "1h")
    ids = await ctx.step.send_event("notify", sdk.Event(name="shop/charged", data=receipt))
    return {"receipt": receipt, "sent": len(ids)}


@pytest.fixture(autouse=True)
def _clear() -> None:
    calls.clear()


def test_a_run_completes_with_every_step_and_its_arguments() -> None:
    result = sdk.testing.trigger(order, ORDER, now_ms=NOW)
    assert (result.status, result.error) == ("completed", None)
    assert result.output == {"receipt": {"charged": 500}, "sent": 1}
    assert [(s.id, s.kind) for s in result.steps] == [
        ("charge", "run"), ("cool-off", "sleep"), ("notify", "send_event")]
    step = result.step("charge")
    assert (step.args, step.output, step.attempts, step.stubbed) == ((7, 500), {"charged": 500},
                                                                    1, False)
    assert result.step("cool-off").args == {"until_ms": NOW + 3_600_000}
    assert result.ended_at_ms == NOW + 3_600_000  # the sleep moved the fake clock, no wait
    assert [(e.name, e.data) for e in result.sent_events] == [("shop/charged", {"charged": 500})]
    assert result.step("notify").output == [result.sent_events[0].id]
    assert calls == ["charge 7"]  # memoized afterwards: one call, as on the engine


def test_a_stub_replaces_the_handler_and_sees_its_arguments() -> None:
    seen: list[tuple[Any, ...]] = []

    def fake_charge(*args: Any) -> dict[str, Any]:
        seen.append(args)
        return {"charged": 0}

    result = sdk.testing.trigger(order, ORDER, step_stubs={"charge": fake_charge})
    assert result.output["receipt"] == {"charged": 0}
    assert seen == [(7, 500)]  # called once, when the step runs, with its arguments
    assert calls == []
    assert result.step("charge").stubbed

    result = sdk.testing.trigger(order, ORDER, step_stubs={"charge": {"charged": 1}})
    assert (result.output["receipt"], calls) == ({"charged": 1}, [])


def test_a_failing_step_is_retried_then_fails_the_run() -> None:
    result = sdk.testing.trigger(order, ORDER, step_stubs={"charge": ValueError("declined")})
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.name, result.error.message) == ("ValueError", "declined")
    assert "declined" in result.error.stack
    step = result.step("charge")
    assert step.attempts == 3  # retries=2
    assert step.error is not None and step.error.name == "ValueError"
    assert result.attempts == 1  # the step's error is memoized: no function retry
    assert [s.id for s in result.steps] == ["charge"]


def test_non_retriable_error_stops_at_once() -> None:
    result = sdk.testing.trigger(
        order, ORDER, step_stubs={"charge": sdk.NonRetriableError("card blocked")})
    assert (result.status, result.step("charge").attempts) == ("failed", 1)
    assert result.error is not None and result.error.name == "NonRetriableError"


def test_a_flaky_step_succeeds_on_retry_and_attempts_are_counted() -> None:
    attempts: list[int] = []

    @client.create_function(fn_id="flaky", trigger=sdk.TriggerEvent(event="x"), retries=3)
    async def flaky(ctx: sdk.Context) -> int:
        attempts.append(ctx.attempt)

        def once_broken() -> int:
            if len(attempts) < 3:
                raise RuntimeError("try again")
            return len(attempts)

        return await ctx.step.run("work", once_broken)

    result = sdk.testing.trigger(flaky, sdk.Event(name="x"))
    assert (result.status, result.output) == ("completed", 3)
    assert result.step("work").attempts == 3
    assert attempts[:3] == [0, 1, 2]  # ctx.attempt counts the step's retries


def test_retry_after_moves_the_fake_clock() -> None:
    tries: list[int] = []

    def rate_limited(*args: Any) -> dict[str, Any]:
        tries.append(1)
        if len(tries) == 1:
            raise sdk.RetryAfterError("slow down", 60_000)
        return {"charged": 1}

    result = sdk.testing.trigger(order, ORDER, now_ms=NOW, step_stubs={"charge": rate_limited})
    assert (result.status, result.step("charge").attempts) == ("completed", 2)
    assert result.ended_at_ms == NOW + 60_000 + 3_600_000  # the retry's wait, then the sleep


def test_a_failing_function_is_retried_without_rerunning_memoized_steps() -> None:
    @client.create_function(fn_id="fails", trigger=sdk.TriggerEvent(event="x"), retries=1)
    async def fails(ctx: sdk.Context) -> None:
        await ctx.step.run("charge", charge, 1, 2)
        raise KeyError("missing")

    result = sdk.testing.trigger(fails, sdk.Event(name="x"))
    assert (result.status, result.attempts, calls) == ("failed", 2, ["charge 1"])
    assert result.error is not None and result.error.name == "KeyError"


def test_wait_for_event_stub_or_timeout() -> None:
    @client.create_function(fn_id="approve", trigger=sdk.TriggerEvent(event="x"))
    async def approve(ctx: sdk.Context) -> str | None:
        reply = await ctx.step.wait_for_event("approval", event="x/approved", timeout="1d",
                                              match="data.id")
        return None if reply is None else reply.data["by"]

    yes = sdk.Event(name="x/approved", data={"id": 1, "by": "ana"})
    result = sdk.testing.trigger(approve, sdk.Event(name="x", data={"id": 1}), now_ms=NOW,
                                 step_stubs={"approval": yes})
    assert (result.output, result.ended_at_ms) == ("ana", NOW)
    wait = result.step("approval")
    assert wait.args == {"event": "x/approved", "match": "data.id", "if_exp": None,
                         "timeout_ms": 86_400_000}
    assert wait.output is not None and wait.output.data["by"] == "ana"

    result = sdk.testing.trigger(approve, sdk.Event(name="x"), now_ms=NOW)
    assert (result.output, result.ended_at_ms) == (None, NOW + 86_400_000)  # timed out


def test_invoke_stubs_output_failure_and_missing() -> None:
    @client.create_function(fn_id="child", trigger=sdk.TriggerEvent(event="child"))
    async def child(ctx: sdk.Context) -> int:
        return 1

    @client.create_function(fn_id="parent", trigger=sdk.TriggerEvent(event="x"))
    async def parent(ctx: sdk.Context) -> Any:
        try:
            return await ctx.step.invoke("call", function=child, data={"n": 2})
        except sdk.StepError as exc:
            return f"child failed: {exc.name}: {exc.message}"

    result = sdk.testing.trigger(parent, sdk.Event(name="x"),
                                 step_stubs={"call": lambda data: data["n"] * 10})
    assert result.output == 20
    assert result.step("call").args == {"function_id": "shop-child", "data": {"n": 2}}
    result = sdk.testing.trigger(parent, sdk.Event(name="x"),
                                 step_stubs={"call": sdk.NonRetriableError("no stock")})
    assert result.output == "child failed: NonRetriableError: no stock"
    with pytest.raises(sdk.testing.UnstubbedStepError, match="'call' invokes 'shop-child'"):
        sdk.testing.trigger(parent, sdk.Event(name="x"))


def test_parallel_steps_are_all_recorded() -> None:
    @client.create_function(fn_id="fan", trigger=sdk.TriggerEvent(event="x"))
    async def fan(ctx: sdk.Context) -> tuple[Any, ...]:
        return await ctx.step.parallel([lambda: ctx.step.run("a", charge, 1, 1),
                                        lambda: ctx.step.run("b", charge, 2, 2)])

    result = sdk.testing.trigger(fan, sdk.Event(name="x"), step_stubs={"b": {"stub": True}})
    assert result.output == ({"charged": 1}, {"stub": True})
    assert [(s.id, s.args, s.stubbed) for s in result.steps] == [
        ("a", (1, 1), False), ("b", (2, 2), True)]


def test_sync_function_with_stubs_sleep_and_parallel() -> None:
    @client.create_function(fn_id="sync", trigger=sdk.TriggerEvent(event="x"), retries=1)
    def sync(ctx: sdk.ContextSync) -> Any:
        receipt = ctx.step.run("charge", charge, 3, 4)
        ctx.step.sleep("nap", 1000)
        pair = ctx.group.parallel([lambda: ctx.step.run("p", lambda: "p"),
                                   lambda: ctx.step.run("q", lambda: "q")])
        ctx.step.send_event("tell", [sdk.Event(name="done")])
        return [receipt, list(pair)]

    result = sdk.testing.trigger(sync, sdk.Event(name="x"), now_ms=NOW)
    assert (result.status, result.output) == ("completed", [{"charged": 4}, ["p", "q"]])
    assert [s.id for s in result.steps] == ["charge", "nap", "p", "q", "tell"]
    assert (result.step("charge").args, result.ended_at_ms) == ((3, 4), NOW + 1000)
    assert [e.name for e in result.sent_events] == ["done"]

    failed = sdk.testing.trigger(sync, sdk.Event(name="x"), step_stubs={"q": OSError("disk")})
    assert failed.status == "failed" and failed.step("q").attempts == 2


def test_failure_handler_gets_the_failed_runs_event() -> None:
    got: list[dict[str, Any]] = []

    def on_failure(ctx: sdk.ContextSync) -> None:  # a sync failure handler
        got.append(ctx.event.data)

    @client.create_function(fn_id="doomed", trigger=sdk.TriggerEvent(event="x"), retries=0,
                            on_failure=on_failure)
    async def doomed(ctx: sdk.Context) -> None:
        raise sdk.NonRetriableError("no")

    result = sdk.testing.trigger(doomed, sdk.Event(name="x", data={"k": 1}))
    assert doomed.on_failure is not None
    handled = sdk.testing.trigger(doomed.on_failure, result.failure_event())
    assert handled.status == "completed"
    assert got[0]["function_id"] == "shop-doomed" and got[0]["run_id"] == result.run_id
    assert got[0]["error"]["message"] == "no" and got[0]["event"]["data"] == {"k": 1}


def test_async_form_and_bad_arguments() -> None:
    async def in_a_loop() -> sdk.testing.RunResult:
        with pytest.raises(RuntimeError, match="trigger_async"):
            sdk.testing.trigger(order, ORDER)
        return await sdk.testing.trigger_async(order, ORDER)

    assert asyncio.run(in_a_loop()).status == "completed"
    with pytest.raises(TypeError, match=r"sdk\.Function"):
        sdk.testing.trigger(charge, ORDER)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="step names"):
        sdk.testing.trigger(order, ORDER, step_stubs={1: 2})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least one"):
        sdk.testing.trigger(order, [])


def test_the_readme_example_holds() -> None:
    from examples.shop import process_order

    result = sdk.testing.trigger(
        process_order, sdk.Event(name="shop/order.created", data={"order_id": 7, "total": 12.5}),
        step_stubs={"charge": sdk.NonRetriableError("card declined")})
    assert result.status == "failed"
    assert result.error is not None and result.error.message == "card declined"
    assert result.step("validate").args == (7,)
    assert result.sent_events == []


def test_a_batch_and_a_send_event_that_fails() -> None:
    @client.create_function(fn_id="batch", trigger=sdk.TriggerEvent(event="x"))
    async def batch(ctx: sdk.Context) -> list[int]:
        try:
            await ctx.step.send_event("bad", sdk.Event(name=""))
        except sdk.StepError:
            pass
        return [e.data["n"] for e in ctx.events]

    result = sdk.testing.trigger(batch, [sdk.Event(name="x", data={"n": n}) for n in (1, 2)])
    assert (result.status, result.output) == ("completed", [1, 2])
    step = result.step("bad")
    assert (step.kind, step.args, step.error and step.error.name) == ("send_event", [],
                                                                     "EventError")
    assert [e.data["n"] for e in result.events] == [1, 2]
