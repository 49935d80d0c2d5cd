"""The pure execution core: replay, step ids, interrupts, outcomes. No broker."""

from __future__ import annotations

import asyncio
import datetime
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdk
from sdk._execution import ExecutionResult, check_task, execute, function_not_found
from topics import records
from topics.codec import decode, encode
from topics.ids import sent_event_id, ulid_ms
from topics.settings import Settings

NOW = 1_700_000_000_000
RUN_ID = "01HGW1J8Z6Y5Q4B3C2D1E0F9GH"
SETTINGS = Settings(brokers="unused:9092")


def make_task(steps: dict[str, Any] | None = None, *, attempt: int = 0,
              data: dict[str, Any] | None = None, fn_id: str = "shop-fn") -> records.Task:
    event = {"name": "shop/order.created", "data": data or {"order_id": 7},
             "id": "01HGW1J8Z6Y5Q4B3C2D1E0F9GH", "ts": NOW - 5}
    return records.Task(
        run_id=RUN_ID, fn_id=fn_id, app_id="shop", seq=1, partition_key=RUN_ID,
        event=event, events=[event], attempt=attempt, steps=steps or {},
        step_attempts={}, ts=NOW,
    )


def ok(value: Any) -> dict[str, Any]:
    return {"data": value}


def err(name: str = "ValueError", message: str = "boom") -> dict[str, Any]:
    return {"error": {"name": name, "message": message, "stack": "Traceback: ..."}}


def define(handler: Any, fn_id: str = "fn") -> sdk.Function:
    client = sdk.Client(app_id="shop", brokers="unused:9092")
    return client.create_function(fn_id=fn_id, trigger=sdk.TriggerEvent(event="shop/*"))(handler)


def run(function: sdk.Function, task: records.Task,
        settings: Settings = SETTINGS) -> ExecutionResult:
    result = asyncio.run(execute(function, task, settings=settings, now_ms=lambda: NOW))
    # Whatever an execution reports must encode and decode as a record.
    report = records.OutcomesReported(RUN_ID, 1, result.outcomes, "w", NOW)
    assert decode(encode(report)) == report
    return result


def only(result: ExecutionResult) -> records.Outcome:
    assert len(result.outcomes) == 1, result.outcomes
    return result.outcomes[0]


class Calls:
    """Counts handler calls, so tests can tell memoized steps were not re-run."""

    def __init__(self) -> None:
        self.n: dict[str, int] = {}

    def handler(self, key: str, value: Any = None) -> Any:
        def call(*args: Any) -> Any:
            self.n[key] = self.n.get(key, 0) + 1
            return value if value is not None else list(args)
        return call


# -- step.run ----------------------------------------------------------------------


def test_first_new_step_runs_and_interrupts() -> None:
    calls = Calls()
    after: list[str] = []

    async def fn(ctx: sdk.Context) -> Any:
        a = await ctx.step.run("a", calls.handler("a"), ctx.event.data["order_id"])
        after.append("a")
        await ctx.step.run("b", calls.handler("b"))
        return a

    o = only(run(define(fn), make_task()))
    assert o.op == records.STEP_COMPLETED
    assert (o.step_id, o.name, o.output) == ("a", "a", [7])
    assert (o.started_at, o.ended_at) == (NOW, NOW)
    assert calls.n == {"a": 1}
    assert after == []


def test_memoized_steps_return_without_rerunning() -> None:
    calls = Calls()

    async def fn(ctx: sdk.Context) -> Any:
        a = await ctx.step.run("a", calls.handler("a"))
        b = await ctx.step.run("b", calls.handler("b", "fresh"))
        return {"a": a, "b": b}

    o = only(run(define(fn), make_task({"a": ok([1, 2])})))
    assert (o.op, o.step_id, o.output) == (records.STEP_COMPLETED, "b", "fresh")
    assert calls.n == {"b": 1}

    o = only(run(define(fn), make_task({"a": ok([1, 2]), "b": ok("old")})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, {"a": [1, 2], "b": "old"})
    assert calls.n == {"b": 1}


def test_async_handler_and_args_pass_through() -> None:
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.run("add", add, 2, 3)

    assert only(run(define(fn), make_task())).output == 5


def test_sync_handler_runs_off_the_loop_thread() -> None:
    threads: list[str] = []

    def handler() -> str:
        threads.append(threading.current_thread().name)
        return "x"

    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.run("s", handler)

    loop_thread: list[str] = []

    async def main() -> ExecutionResult:
        loop_thread.append(threading.current_thread().name)
        return await execute(define(fn), make_task(), settings=SETTINGS, now_ms=lambda: NOW)

    assert only(asyncio.run(main())).output == "x"
    assert threads and threads[0] != loop_thread[0]


def test_lambda_returning_a_coroutine_is_awaited() -> None:
    async def fetch() -> str:
        return "fetched"

    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.run("f", lambda: fetch())

    assert only(run(define(fn), make_task())).output == "fetched"


def test_repeated_step_ids_are_numbered_in_call_order() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        total = 0
        for i in range(4):
            total += await ctx.step.run("add", lambda i=i: i)
        return total

    result = sdk.testing.trigger(define(fn), sdk.Event(name="shop/x"),
                                 step_stubs={"add:2": 20})  # a stub for one call only
    assert [(s.id, s.name, s.output) for s in result.steps] == [
        ("add", "add", 0), ("add:1", "add", 1), ("add:2", "add", 20), ("add:3", "add", 3)]
    assert result.output == 0 + 1 + 20 + 3


def test_explicit_counter_like_ids_do_not_collide() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("x:1", lambda: 1)
        await ctx.step.run("x", lambda: 2)
        await ctx.step.run("x", lambda: 3)
        return None

    o = only(run(define(fn), make_task({"x:1": ok(1), "x": ok(2)})))
    assert (o.step_id, o.name) == ("x:2", "x")


def test_sleep_counts_towards_repeated_ids() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("wait", lambda: 1)
        await ctx.step.sleep("wait", "1s")
        return None

    o = only(run(define(fn), make_task({"wait": ok(1)})))
    assert (o.op, o.step_id, o.name) == (records.STEP_SLEEP, "wait:1", "wait")


def test_step_error_memo_raises_catchable_step_error() -> None:
    caught: list[sdk.StepError] = []

    async def fn(ctx: sdk.Context) -> Any:
        try:
            await ctx.step.run("charge", lambda: "never")
        except sdk.StepError as exc:
            caught.append(exc)
            return await ctx.step.run("refund", lambda: "refunded")
        return "charged"

    o = only(run(define(fn), make_task({"charge": err("CardDeclined", "no funds")})))
    assert (o.op, o.step_id, o.output) == (records.STEP_COMPLETED, "refund", "refunded")
    (exc,) = caught
    assert (exc.name, exc.message, exc.stack, exc.step_id) == (
        "CardDeclined", "no funds", "Traceback: ...", "charge")


def test_uncaught_step_error_fails_function_without_retry() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("charge", lambda: None)

    o = only(run(define(fn), make_task({"charge": err("CardDeclined", "no funds")})))
    assert o.op == records.FUNCTION_FAILED
    assert o.retriable is False
    assert o.error == {"name": "CardDeclined", "message": "no funds", "stack": "Traceback: ...",
                       "code": "step_errored"}


def test_step_exception_is_retriable_failure_with_stack() -> None:
    def boom() -> None:
        raise ValueError("bad input")

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("v", boom)

    o = only(run(define(fn), make_task()))
    assert (o.op, o.step_id, o.retriable, o.retry_after_ms) == (
        records.STEP_FAILED, "v", True, None)
    assert o.error is not None
    assert (o.error["name"], o.error["message"]) == ("ValueError", "bad input")
    assert "boom" in o.error["stack"]


def test_non_retriable_error_in_step() -> None:
    def boom() -> None:
        raise sdk.NonRetriableError("gone for good")

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("v", boom)

    o = only(run(define(fn), make_task()))
    assert (o.op, o.retriable) == (records.STEP_FAILED, False)
    assert o.error is not None and o.error["name"] == "NonRetriableError"


@pytest.mark.parametrize(("retry_after", "expected"), [
    (5000, NOW + 5000),
    (datetime.timedelta(minutes=1), NOW + 60_000),
    (datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC), 1_893_456_000_000),
    (datetime.datetime(2030, 1, 1), 1_893_456_000_000),
])
def test_retry_after_error_in_step(retry_after: Any, expected: int) -> None:
    def busy() -> None:
        raise sdk.RetryAfterError("rate limited", retry_after)

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("call", busy)

    o = only(run(define(fn), make_task()))
    assert (o.op, o.retriable, o.retry_after_ms) == (records.STEP_FAILED, True, expected)


def test_unserializable_output_fails_naming_the_step() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("make", lambda: {"when": datetime.datetime.now()})

    o = only(run(define(fn), make_task()))
    assert (o.op, o.step_id, o.retriable) == (records.STEP_FAILED, "make", False)
    assert o.error is not None and o.error["name"] == "OutputNotSerializable"
    assert "'make'" in o.error["message"] and "datetime" in o.error["message"]


def test_oversized_output_fails_naming_the_step() -> None:
    small = Settings(brokers="x", max_step_output_bytes=100)

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("big", lambda: "x" * 500)

    o = only(run(define(fn), make_task(), small))
    assert (o.op, o.retriable) == (records.STEP_FAILED, False)
    # Too large is not "not serializable": the name says which limit to look at.
    assert o.error is not None and o.error["name"] == "OutputTooLarge"
    assert o.error["message"] == ("step 'big' output is 503 bytes, over the 100-byte limit "
                                  "(STEPSTREAM_MAX_STEP_OUTPUT_BYTES)")


def test_oversized_function_output_fails_as_too_large() -> None:
    small = Settings(brokers="x", max_step_output_bytes=100)

    async def fn(ctx: sdk.Context) -> Any:
        return "x" * 500

    o = only(run(define(fn), make_task(), small))
    assert (o.op, o.retriable) == (records.FUNCTION_FAILED, False)
    assert o.error is not None and o.error["name"] == "OutputTooLarge"
    assert "function 'shop-fn' output is 503 bytes" in o.error["message"]


def test_except_exception_does_not_swallow_the_interrupt() -> None:
    calls = Calls()

    async def fn(ctx: sdk.Context) -> Any:
        try:
            await ctx.step.run("a", calls.handler("a"))
        except Exception:
            return "swallowed"
        return "after"

    o = only(run(define(fn), make_task()))
    assert (o.op, o.step_id) == (records.STEP_COMPLETED, "a")


def test_swallowed_interrupt_runs_no_further_step() -> None:
    calls = Calls()

    async def fn(ctx: sdk.Context) -> Any:
        try:
            await ctx.step.run("a", calls.handler("a"))
        except BaseException:
            pass
        try:
            await ctx.step.run("b", calls.handler("b"))
        except BaseException:
            pass
        return "done"

    o = only(run(define(fn), make_task()))
    assert o.step_id == "a"
    assert calls.n == {"a": 1}


def nested_failure(result: ExecutionResult) -> str:
    """The message of the run's non-retriable NestedStepError failure."""
    o = only(result)
    assert (o.op, o.retriable) == (records.FUNCTION_FAILED, False), o
    assert o.error is not None and o.error["name"] == "NestedStepError", o.error
    return str(o.error["message"])


def test_nested_steps_fail_the_run_naming_both_steps() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        async def outer() -> Any:
            return await ctx.step.run("inner", lambda: 1)
        await ctx.step.run("outer", outer)

    message = nested_failure(run(define(fn), make_task()))
    assert "'inner'" in message and "'outer'" in message


def test_nested_step_cannot_be_swallowed_by_except_exception() -> None:
    # The reported bug: the outer handler's `except Exception` caught the nested-step
    # error, the outer step completed and the run finished without the inner step.
    async def fn(ctx: sdk.Context) -> Any:
        async def outer() -> Any:
            try:
                return await ctx.step.run("inner", lambda: 1)
            except Exception:
                return "swallowed"
        try:
            return await ctx.step.run("outer", outer)
        except Exception:
            return "swallowed in the body"

    message = nested_failure(run(define(fn), make_task()))
    assert "'inner'" in message and "'outer'" in message


def test_nested_step_fails_the_run_even_if_caught_deliberately() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        async def outer() -> Any:
            try:
                await ctx.step.sleep("inner-nap", "1s")
            except BaseException:
                pass
            return "done"
        return await ctx.step.run("outer", outer)

    nested_failure(run(define(fn), make_task({"before": ok(1)})))


def test_nested_step_in_a_parallel_line_fails_the_run() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        async def outer() -> Any:
            return await ctx.step.run("inner", lambda: 1)
        return await ctx.step.parallel([lambda: ctx.step.run("plain", lambda: 2),
                                        lambda: ctx.step.run("outer", outer)])

    message = nested_failure(run(define(fn), make_task()))
    assert "'inner'" in message and "'outer'" in message


# -- sleep ---------------------------------------------------------------------------


@pytest.mark.parametrize(("duration", "ms"), [
    ("2s", 2000), ("1h", 3_600_000), ("500ms", 500), ("1d", 86_400_000), ("1m", 60_000),
    ("1h30m", 5_400_000), (datetime.timedelta(seconds=2), 2000), (1500, 1500), (0, 0),
])
def test_sleep_plans_until(duration: Any, ms: int) -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.sleep("nap", duration)

    o = only(run(define(fn), make_task()))
    assert (o.op, o.step_id, o.name, o.until_ms) == (records.STEP_SLEEP, "nap", "nap", NOW + ms)


@pytest.mark.parametrize(("until", "ms"), [
    (datetime.datetime(2030, 1, 1, 0, 0, 1), 1_893_456_001_000),
    (datetime.datetime(2030, 1, 1, 2, 0, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
     1_893_456_001_000),
])
def test_sleep_until(until: datetime.datetime, ms: int) -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.sleep_until("until", until)

    o = only(run(define(fn), make_task()))
    assert (o.op, o.until_ms) == (records.STEP_SLEEP, ms)


def test_memoized_sleep_returns_none_and_continues() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        slept = await ctx.step.sleep("nap", "1h")  # type: ignore[func-returns-value]
        return {"slept": slept}

    o = only(run(define(fn), make_task({"nap": ok(None)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, {"slept": None})


@pytest.mark.parametrize("bad", ["2 parsecs", "-1s", "", -5, True, 1.5])
def test_bad_sleep_duration_fails_the_function(bad: Any) -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.sleep("nap", bad)

    o = only(run(define(fn), make_task()))
    assert o.op == records.FUNCTION_FAILED


# -- send_event ----------------------------------------------------------------------


def test_send_event_gives_deterministic_ids() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.send_event("notify", [
            sdk.Event(name="shop/a", data={"i": 1}),
            sdk.Event(name="shop/b", data={"i": 2}, id="mine", ts=5),
        ])

    first = run(define(fn), make_task())
    again = run(define(fn), make_task())
    o = only(first)
    assert o.op == records.STEP_COMPLETED and o.step_id == "notify"
    expected_0 = sent_event_id(RUN_ID, "notify", 0, ulid_ms(RUN_ID))
    assert o.output == [expected_0, "mine"]
    assert only(again).output == o.output
    sent = first.sends["notify"]
    assert [(e.name, e.data, e.id, e.ts) for e in sent] == [
        ("shop/a", {"i": 1}, expected_0, NOW), ("shop/b", {"i": 2}, "mine", 5)]


def test_send_event_single_event_and_memo() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        ids = await ctx.step.send_event("one", sdk.Event(name="shop/a"))
        return ids

    result = run(define(fn), make_task())
    assert len(only(result).output) == 1 and len(result.sends["one"]) == 1
    done = run(define(fn), make_task({"one": ok(["id-1"])}))
    assert only(done).output == ["id-1"] and done.sends == {}


def test_send_event_rejects_oversized_event_naming_the_step() -> None:
    small = Settings(brokers="x", max_event_bytes=64)

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.send_event("notify", sdk.Event(name="shop/a", data={"x": "y" * 100}))

    result = run(define(fn), make_task(), small)
    o = only(result)
    assert (o.op, o.step_id, o.retriable) == (records.STEP_FAILED, "notify", False)
    assert o.error is not None and "'notify'" in o.error["message"]
    assert "too large" in o.error["message"] and "64-byte" in o.error["message"]
    assert result.sends == {}


# -- parallel ------------------------------------------------------------------------


def test_parallel_reports_all_new_steps_together() -> None:
    calls = Calls()
    after: list[str] = []

    async def fn(ctx: sdk.Context) -> Any:
        a, b, c = await ctx.step.parallel((
            lambda: ctx.step.run("a", calls.handler("a", "A")),
            lambda: ctx.step.run("b", calls.handler("b", "B")),
            lambda: ctx.step.sleep("c", "1s"),
        ))
        after.append("past")
        return [a, b, c]

    result = run(define(fn), make_task())
    assert [(o.op, o.step_id) for o in result.outcomes] == [
        (records.STEP_COMPLETED, "a"), (records.STEP_COMPLETED, "b"), (records.STEP_SLEEP, "c")]
    assert calls.n == {"a": 1, "b": 1}
    assert after == []


def test_parallel_runs_only_the_new_ones_then_returns_results() -> None:
    calls = Calls()

    async def fn(ctx: sdk.Context) -> Any:
        results = await ctx.step.parallel((
            lambda: ctx.step.run("a", calls.handler("a", "A")),
            lambda: ctx.step.run("b", calls.handler("b", "B")),
        ))
        return list(results)

    o = only(run(define(fn), make_task({"a": ok("A0")})))
    assert (o.step_id, o.output) == ("b", "B")
    assert calls.n == {"b": 1}

    o = only(run(define(fn), make_task({"a": ok("A0"), "b": ok("B0")})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, ["A0", "B0"])
    assert calls.n == {"b": 1}


def test_parallel_steps_run_concurrently() -> None:
    both_started = asyncio.Barrier(2)

    async def meet() -> str:
        # Deadlocks (and times out) unless both branches run at the same time.
        await asyncio.wait_for(both_started.wait(), timeout=10)
        return "met"

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.parallel((
            lambda: ctx.step.run("a", meet),
            lambda: ctx.step.run("b", meet),
        ))

    result = run(define(fn), make_task())
    assert [o.output for o in result.outcomes] == ["met", "met"]


def test_parallel_lines_of_several_steps() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        async def line(name: str) -> str:
            first = await ctx.step.run(f"{name}1", lambda: name + "1")
            second = await ctx.step.run(f"{name}2", lambda: first + "2")
            return second
        return list(await ctx.step.parallel((lambda: line("a"), lambda: line("b"))))

    result = run(define(fn), make_task({"a1": ok("a1"), "b1": ok("b1"), "b2": ok("b12")}))
    assert [(o.step_id, o.output) for o in result.outcomes] == [("a2", "a12")]
    done = run(define(fn), make_task({"a1": ok("a1"), "a2": ok("a12"), "b1": ok("b1"),
                                      "b2": ok("b12")}))
    assert only(done).output == ["a12", "b12"]


def test_parallel_step_error_is_raised_when_nothing_new() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        try:
            await ctx.step.parallel((
                lambda: ctx.step.run("a", lambda: 1),
                lambda: ctx.step.run("b", lambda: 2),
            ))
        except sdk.StepError as exc:
            return f"caught {exc.step_id}"
        return "fine"

    pending = run(define(fn), make_task({"a": err()}))
    assert [o.step_id for o in pending.outcomes] == ["b"]
    o = only(run(define(fn), make_task({"a": err(), "b": ok(2)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, "caught a")


def test_parallel_with_repeated_ids_is_deterministic() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        def line(i: int) -> Any:
            return lambda: ctx.step.run("item", lambda: i)
        return list(await ctx.step.parallel([line(i) for i in range(3)]))

    result = run(define(fn), make_task())
    assert [(o.step_id, o.output) for o in result.outcomes] == [
        ("item", 0), ("item:1", 1), ("item:2", 2)]
    memo = {str(o.step_id): ok(o.output) for o in result.outcomes}
    assert only(run(define(fn), make_task(memo))).output == [0, 1, 2]


def test_parallel_send_event_and_run() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.parallel((
            lambda: ctx.step.send_event("tell", sdk.Event(name="shop/x")),
            lambda: ctx.step.run("work", lambda: 1),
        ))

    result = run(define(fn), make_task())
    assert [o.step_id for o in result.outcomes] == ["tell", "work"]
    assert list(result.sends) == ["tell"]


# -- the function itself -------------------------------------------------------------


def test_function_return_completes_with_output() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        return {"order": ctx.event.data["order_id"], "attempt": ctx.attempt,
                "run": ctx.run_id, "n": len(ctx.events)}

    o = only(run(define(fn), make_task(attempt=2)))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED,
                                {"order": 7, "attempt": 2, "run": RUN_ID, "n": 1})
    assert run(define(fn), make_task()).finished


def test_function_exception_is_retriable() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        raise KeyError("missing")

    o = only(run(define(fn), make_task()))
    assert (o.op, o.retriable) == (records.FUNCTION_FAILED, True)
    assert o.error is not None and o.error["name"] == "KeyError"


def test_function_non_retriable_and_retry_after() -> None:
    async def give_up(ctx: sdk.Context) -> Any:
        raise sdk.NonRetriableError("no")

    async def later(ctx: sdk.Context) -> Any:
        raise sdk.RetryAfterError("later", 10_000)

    o = only(run(define(give_up), make_task()))
    assert (o.op, o.retriable) == (records.FUNCTION_FAILED, False)
    o = only(run(define(later), make_task()))
    assert (o.op, o.retriable, o.retry_after_ms) == (records.FUNCTION_FAILED, True, NOW + 10_000)


def test_function_unserializable_output_fails_naming_the_function() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        return {1: "int key"}

    o = only(run(define(fn), make_task()))
    assert (o.op, o.retriable) == (records.FUNCTION_FAILED, False)
    assert o.error is not None and o.error["name"] == "OutputNotSerializable"
    assert "shop-fn" in o.error["message"]


def test_function_not_found_report() -> None:
    o = only(function_not_found(make_task(fn_id="shop-nope")))
    assert (o.op, o.retriable) == (records.FUNCTION_FAILED, False)
    assert o.error is not None and o.error["name"] == "FunctionNotFound"


def test_logger_is_quiet_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    async def fn(ctx: sdk.Context) -> Any:
        ctx.logger.warning("before a")
        await ctx.step.run("a", lambda: 1)
        ctx.logger.warning("after a")
        await ctx.step.run("b", lambda: 2)
        return None

    with caplog.at_level("WARNING", logger="stepstream.function"):
        run(define(fn), make_task({"a": ok(1)}))
    assert [r.getMessage() for r in caplog.records] == ["after a"]


def test_check_task_rejects_wrong_types() -> None:
    assert check_task(make_task()) is None
    bad = make_task()
    bad.steps = {"a": 1}  # type: ignore[dict-item]
    assert check_task(bad) is not None
    bad = make_task()
    bad.seq = "1"  # type: ignore[assignment]
    assert check_task(bad) is not None


@given(st.lists(st.sampled_from(["a", "b", "a:1", "c"]), min_size=1, max_size=12))
def test_step_ids_are_unique_and_replay_identically(ids: list[str]) -> None:
    async def fn(ctx: sdk.Context) -> Any:
        return [await ctx.step.run(i, lambda i=i: i) for i in ids]

    memo: dict[str, Any] = {}
    seen: list[str] = []
    function = define(fn)
    for _ in ids:
        o = only(run(function, make_task(dict(memo))))
        assert o.step_id is not None
        seen.append(o.step_id)
        memo[o.step_id] = ok(o.output)
    assert len(set(seen)) == len(seen)
    assert only(run(function, make_task(memo))).output == ids
