"""wait_for_event, invoke, and ctx.cron_tick. No broker."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

import sdk
from sdk._execution import ExecutionResult, check_task, execute
from tests.unit.sdk.test_execution import NOW, define, err, make_task, ok, only, run
from topics import records
from topics.settings import Settings

PAID = {"name": "shop/invoice.paid", "data": {"invoice_id": 7, "amount": 12.5},
        "id": "01HGW1J8Z6Y5Q4B3C2D1E0F9GZ", "ts": NOW + 10}


def child() -> sdk.Function:
    client = sdk.Client(app_id="shop", brokers="unused:9092")

    @client.create_function(fn_id="child", trigger=sdk.TriggerEvent(event="shop/child"))
    async def fn(ctx: sdk.Context) -> Any:
        return ctx.event.data

    return fn


def message_of(call: Any) -> str:
    """Run ``call(ctx)`` inside a function that returns the message of what it raised."""
    async def fn(ctx: sdk.Context) -> Any:
        try:
            await call(ctx)
        except (TypeError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    o = only(run(define(fn), make_task()))
    assert o.op == records.FUNCTION_COMPLETED
    return str(o.output)


# -- wait_for_event ------------------------------------------------------------------


@pytest.mark.parametrize(("match", "path"), [
    (None, None), ("data.invoice_id", "data.invoice_id"),
    ("event.data.invoice_id", "data.invoice_id"), ("async.data.invoice_id", "data.invoice_id"),
    (" data.customer.id ", "data.customer.id"),
])
def test_wait_for_event_reports_the_wait(match: str | None, path: str | None) -> None:
    after: list[str] = []

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.wait_for_event("paid", event="shop/invoice.paid", timeout="1h",
                                      match=match,
                                      if_exp="async.data.amount >= event.data.total")
        after.append("past")

    o = only(run(define(fn), make_task()))
    assert (o.op, o.step_id, o.name, o.until_ms) == (records.STEP_WAIT, "paid", "paid",
                                                     NOW + 3_600_000)
    assert o.wait == {"event": "shop/invoice.paid", "match": path,
                      "if_exp": "async.data.amount >= event.data.total"}
    assert after == []


def test_wait_for_event_timeout_forms() -> None:
    for timeout, ms in ((5000, 5000), (datetime.timedelta(minutes=2), 120_000), ("1d", 86_400_000)):
        async def fn(ctx: sdk.Context, timeout: Any = timeout) -> Any:
            await ctx.step.wait_for_event("w", event="e", timeout=timeout)

        assert only(run(define(fn), make_task())).until_ms == NOW + ms


def test_memoized_wait_returns_the_event_or_none() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        paid = await ctx.step.wait_for_event("paid", event="shop/invoice.paid", timeout="1h",
                                             match="data.invoice_id")
        if paid is None:
            return "timed out"
        assert isinstance(paid, sdk.Event)
        return [paid.name, paid.data, paid.id, paid.ts]

    o = only(run(define(fn), make_task({"paid": ok(PAID)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, [
        "shop/invoice.paid", {"invoice_id": 7, "amount": 12.5}, PAID["id"], PAID["ts"]])
    o = only(run(define(fn), make_task({"paid": ok(None)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, "timed out")


def test_wait_then_next_step_and_repeated_ids() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        for _ in range(2):
            await ctx.step.wait_for_event("w", event="e", timeout=1000)
        return await ctx.step.run("after", lambda: "ran")

    result = sdk.testing.trigger(define(fn), sdk.Event(name="shop/x"), now_ms=NOW,
                                 step_stubs={"w:1": sdk.Event.from_wire(PAID)})
    assert [(s.id, s.name, s.kind) for s in result.steps] == [
        ("w", "w", "wait_for_event"), ("w:1", "w", "wait_for_event"), ("after", "after", "run")]
    assert result.step("w").output is None  # not stubbed: it timed out
    assert (result.step("w:1").output.name, result.output) == ("shop/invoice.paid", "ran")
    assert result.ended_at_ms == NOW + 1000


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"event": "e", "timeout": None}, "TypeError: step 'w': wait_for_event needs a timeout"),
    ({"event": "e", "timeout": 0}, "ValueError: step 'w': timeout must be more than 0"),
    ({"event": "e", "timeout": "soon"}, "ValueError: cannot read duration 'soon'"),
    ({"event": "", "timeout": "1h"}, "TypeError: step 'w': event must be a non-empty"),
    ({"event": "e", "timeout": "1h", "match": "data..id"}, "ValueError: match 'data..id' is not"),
    ({"event": "e", "timeout": "1h", "match": ""}, "ValueError: match '' is not a field path"),
    ({"event": "e", "timeout": "1h", "match": "event."}, "ValueError: match 'event.' is not"),
    ({"event": "e", "timeout": "1h", "match": "data[0]"}, "ValueError: match 'data[0]' is not"),
    ({"event": "e", "timeout": "1h", "match": 5}, "TypeError: match must be a field path"),
    ({"event": "e", "timeout": "1h", "if_exp": "async.data.x =="},
     "ValueError: step 'w': if_exp 'async.data.x ==' does not parse as CEL"),
    ({"event": "e", "timeout": "1h", "if_exp": " "}, "ValueError: step 'w': if_exp ' ' is empty"),
])
def test_wait_for_event_rejects_bad_arguments_when_called(kwargs: dict[str, Any],
                                                          expected: str) -> None:
    assert message_of(lambda ctx: ctx.step.wait_for_event("w", **kwargs)).startswith(expected)


def test_bad_wait_arguments_fail_the_function() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.wait_for_event("w", event="e", timeout="1h", if_exp="((")

    o = only(run(define(fn), make_task()))
    assert o.op == records.FUNCTION_FAILED
    assert o.error is not None and "does not parse as CEL" in o.error["message"]


# -- invoke --------------------------------------------------------------------------


def test_invoke_reports_the_registered_id_and_data() -> None:
    target = child()

    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.invoke("call", function=target, data={"n": 1})

    o = only(run(define(fn), make_task()))
    assert (o.op, o.step_id, o.name, o.until_ms) == (records.STEP_INVOKE, "call", "call", None)
    assert o.invoke == {"function_id": "shop-child", "data": {"n": 1}}


def test_invoke_timeout_and_default_data() -> None:
    target = child()

    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.invoke("call", function=target, timeout="30s")

    o = only(run(define(fn), make_task()))
    assert (o.until_ms, o.invoke) == (NOW + 30_000, {"function_id": "shop-child", "data": {}})


@pytest.mark.parametrize(("app_id", "full_id"), [(None, "shop-charge"), ("billing", "billing-charge")])
def test_invoke_by_id(app_id: str | None, full_id: str) -> None:
    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.invoke_by_id("call", function_id="charge", app_id=app_id,
                                           data={"cents": 5}, timeout=60_000)

    o = only(run(define(fn), make_task()))
    assert (o.op, o.until_ms) == (records.STEP_INVOKE, NOW + 60_000)
    assert o.invoke == {"function_id": full_id, "data": {"cents": 5}}


def test_memoized_invoke_returns_output_or_raises_step_error() -> None:
    target = child()

    async def fn(ctx: sdk.Context) -> Any:
        try:
            out = await ctx.step.invoke("call", function=target, data={"n": 1})
        except sdk.StepError as exc:
            return {"failed": exc.step_id, "name": exc.name, "message": exc.message}
        return {"out": out}

    o = only(run(define(fn), make_task({"call": ok({"n": 1})})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, {"out": {"n": 1}})
    o = only(run(define(fn), make_task({"call": err("Timeout", "no answer in 30s")})))
    assert o.output == {"failed": "call", "name": "Timeout", "message": "no answer in 30s"}


def test_invoke_data_that_cannot_be_sent_fails_the_step_naming_it() -> None:
    target = child()

    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.invoke("call", function=target,
                                     data={"when": datetime.datetime(2024, 1, 1)})

    o = only(run(define(fn), make_task()))
    assert (o.op, o.step_id, o.retriable) == (records.STEP_FAILED, "call", False)
    assert o.error is not None and o.error["name"] == "InvokeDataError"
    assert "step 'call' invoke data.when" in o.error["message"]
    assert "datetime" in o.error["message"]

    async def big(ctx: sdk.Context) -> Any:
        return await ctx.step.invoke("call", function=target, data={"x": "y" * 200})

    small = Settings(brokers="x", max_event_bytes=64)
    o = only(run(define(big), make_task(), small))
    assert (o.op, o.retriable) == (records.STEP_FAILED, False)
    assert o.error is not None and "64-byte limit" in o.error["message"]


@pytest.mark.parametrize(("call", "expected"), [
    (lambda ctx: ctx.step.invoke("c", function="shop-child"),
     "TypeError: step 'c': function must be an sdk.Function"),
    (lambda ctx: ctx.step.invoke("c", function=child(), data=[1]),
     "TypeError: step 'c': invoke data must be a dict or None, got list"),
    (lambda ctx: ctx.step.invoke("c", function=child(), timeout=0),
     "ValueError: step 'c': timeout must be more than 0"),
    (lambda ctx: ctx.step.invoke_by_id("c", function_id=""),
     "TypeError: step 'c': function_id must be a non-empty string"),
    (lambda ctx: ctx.step.invoke_by_id("c", function_id="f", app_id=""),
     "TypeError: step 'c': app_id must be a non-empty string"),
])
def test_invoke_rejects_bad_arguments_when_called(call: Any, expected: str) -> None:
    assert message_of(call).startswith(expected)


# -- inside parallel (more in test_group.py) -----------------------------------------


def test_wait_in_parallel_alone_is_fine() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        a, paid = await ctx.step.parallel((
            lambda: ctx.step.run("a", lambda: 1),
            lambda: ctx.step.wait_for_event("w", event="e", timeout="1h"),
        ))
        return [a, paid.name]

    o = only(run(define(fn), make_task({"a": ok(1)})))
    assert (o.op, o.step_id) == (records.STEP_WAIT, "w")
    o = only(run(define(fn), make_task({"a": ok(1), "w": ok(PAID)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, [1, "shop/invoice.paid"])


def test_sleeps_in_parallel_are_still_allowed() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.parallel((lambda: ctx.step.sleep("a", "1s"),
                                 lambda: ctx.step.run("b", lambda: 2)))

    result = run(define(fn), make_task())
    assert [o.op for o in result.outcomes] == [records.STEP_SLEEP, records.STEP_COMPLETED]


# -- context -------------------------------------------------------------------------


def test_cron_tick_is_utc_datetime_or_none() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        return None if ctx.cron_tick is None else ctx.cron_tick.isoformat()

    task = make_task()
    task.cron_tick_ms = 1_704_067_200_500
    o = only(run(define(fn), task))
    assert o.output == "2024-01-01T00:00:00.500000+00:00"
    assert only(run(define(fn), make_task())).output is None


def test_check_task_checks_the_new_fields() -> None:
    bad = make_task()
    bad.report_start = 1  # type: ignore[assignment]
    assert check_task(bad) == "task.report_start must be a boolean"
    bad = make_task()
    bad.cron_tick_ms = "soon"  # type: ignore[assignment]
    assert check_task(bad) == "task.cron_tick_ms must be an integer or null"
    good = make_task()
    good.report_start, good.cron_tick_ms = True, 5
    assert check_task(good) is None


def test_execution_uses_the_tasks_app_for_invoke_by_id() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.invoke_by_id("c", function_id="f")

    task = make_task()
    task.app_id = "elsewhere"
    result: ExecutionResult = asyncio.run(execute(define(fn), task, settings=Settings(brokers="x"),
                                                  now_ms=lambda: NOW))
    assert only(result).invoke == {"function_id": "elsewhere-f", "data": {}}
