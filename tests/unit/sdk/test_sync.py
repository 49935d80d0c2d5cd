"""Sync functions (``def`` handlers): blocking steps over the async step machinery."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import sdk
from sdk._execution import ExecutionResult
from tests.unit.sdk.test_execution import define, make_task, ok, only, run
from topics import records


def test_sync_body_runs_in_its_own_thread_and_steps_block() -> None:
    threads: dict[str, str] = {}

    def fn(ctx: sdk.ContextSync) -> Any:
        threads["body"] = threading.current_thread().name
        a = ctx.step.run("a", lambda x: x + 1, ctx.event.data["order_id"])
        return a * 2

    o = only(run(define(fn), make_task()))
    assert (o.op, o.step_id, o.output) == (records.STEP_COMPLETED, "a", 8)
    assert threads["body"].startswith("stepstream-sync-fn")
    o = only(run(define(fn), make_task({"a": ok(8)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, 16)


def test_except_exception_in_a_sync_body_does_not_swallow_the_interrupt() -> None:
    after: list[str] = []

    def fn(ctx: sdk.ContextSync) -> Any:
        try:
            ctx.step.run("a", lambda: 1)
        except Exception:
            after.append("swallowed")
        after.append("went on")
        return "done"

    o = only(run(define(fn), make_task()))
    assert (o.op, o.step_id) == (records.STEP_COMPLETED, "a")
    assert after == []


def test_memoized_step_error_is_catchable_in_a_sync_body() -> None:
    def fn(ctx: sdk.ContextSync) -> Any:
        try:
            ctx.step.run("a", lambda: 1)
        except sdk.StepError as exc:
            return f"caught {exc.name}"
        return "no"

    bad = {"error": {"name": "ValueError", "message": "boom", "stack": ""}}
    assert only(run(define(fn), make_task({"a": bad}))).output == "caught ValueError"


def test_every_sync_step_kind_reports_like_its_async_twin() -> None:
    target = define(lambda ctx: None, fn_id="child")

    def fn(ctx: sdk.ContextSync) -> Any:
        ctx.step.sleep_until("until", "2030-01-01T00:00:00Z")
        ctx.step.send_event("send", sdk.Event(name="x"))
        got = ctx.step.wait_for_event("wait", event="y", timeout=1000)
        one = ctx.step.invoke("inv", function=target)
        two = ctx.step.invoke_by_id("by-id", function_id="other", data={"a": 1})
        return [got, one, two]

    memo: dict[str, Any] = {}
    ops = []
    for _ in range(6):
        result: ExecutionResult = run(define(fn), make_task(dict(memo)))
        o = only(result)
        ops.append((o.op, o.step_id))
        if o.step_id is not None:
            memo[o.step_id] = ok(o.output)
    assert ops == [(records.STEP_SLEEP, "until"), (records.STEP_COMPLETED, "send"),
                   (records.STEP_WAIT, "wait"), (records.STEP_INVOKE, "inv"),
                   (records.STEP_INVOKE, "by-id"), (records.FUNCTION_COMPLETED, None)]


def test_nested_step_in_a_sync_step_fails_the_run() -> None:
    def fn(ctx: sdk.ContextSync) -> Any:
        return ctx.step.run("outer", lambda: ctx.step.run("inner", lambda: 1))

    o = only(run(define(fn), make_task()))
    assert (o.op, o.retriable) == (records.FUNCTION_FAILED, False)
    assert "'inner' was called inside the handler of step 'outer'" in o.error["message"]


def test_sync_parallel_reports_new_steps_together_in_order() -> None:
    order: list[str] = []

    def step(name: str) -> Any:
        return lambda: order.append(name) or name

    def fn(ctx: sdk.ContextSync) -> Any:
        return list(ctx.step.parallel([
            lambda: ctx.step.run("a", step("a")),
            lambda: ctx.step.run("b", step("b")) + ctx.step.run("c", step("c")),
        ]))

    result = run(define(fn), make_task())
    assert [(o.step_id, o.output) for o in result.outcomes] == [("a", "a"), ("b", "b")]
    assert order == ["a", "b"]  # one after the other, in order: a deterministic pass
    result = run(define(fn), make_task({"a": ok("a"), "b": ok("b")}))
    assert [o.step_id for o in result.outcomes] == ["c"]
    o = only(run(define(fn), make_task({"a": ok("a"), "b": ok("b"), "c": ok("c")})))
    assert o.output == ["a", "bc"]


def test_async_step_handler_in_a_sync_function_is_refused() -> None:
    async def handler() -> int:
        return 1

    def fn(ctx: sdk.ContextSync) -> Any:
        return ctx.step.run("a", handler)

    o = only(run(define(fn), make_task()))
    assert o.op == records.FUNCTION_FAILED
    assert "step handlers are sync callables" in o.error["message"]


def test_handlers_that_cannot_work_are_refused_naming_the_function() -> None:
    client = sdk.Client(app_id="a", brokers="b")

    def gen(ctx: sdk.ContextSync) -> Any:
        yield 1

    with pytest.raises(sdk.ConfigError, match="'g': the handler is a generator"):
        client.create_function(fn_id="g", trigger=sdk.TriggerEvent(event="e"))(gen)
    with pytest.raises(sdk.ConfigError, match="'h': on_failure is not callable"):
        client.create_function(fn_id="h", trigger=sdk.TriggerEvent(event="e"),
                               on_failure=5)  # type: ignore[arg-type]


def test_a_cancelled_execution_starts_no_step_after() -> None:
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def fn(ctx: sdk.ContextSync) -> Any:
        entered.set()
        release.wait(10)
        try:
            ctx.step.run("after", lambda: ran.append("after"))
        finally:
            ran.append("body ended")

    async def main() -> None:
        from sdk._execution import execute
        from tests.unit.sdk.test_execution import NOW, SETTINGS

        task = asyncio.ensure_future(execute(define(fn), make_task(), settings=SETTINGS,
                                             now_ms=lambda: NOW))
        await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.to_thread(lambda: wait_until(lambda: bool(ran)))

    asyncio.run(main())
    assert ran == ["body ended"]  # the step after the cancel never ran its handler


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_step_call_ends_the_body_once_the_loop_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk import _sync
    from sdk._step import Interrupt

    monkeypatch.setattr(_sync, "_CHECK_LOOP_S", 0.02)

    async def never_run() -> int:
        return 1

    loop = asyncio.new_event_loop()  # never runs: the call is queued, never answered
    step = _sync.StepSync(None, loop)  # type: ignore[arg-type]
    step._loop_thread = -1  # as if made on the loop's thread, which this one is not
    threading.Timer(0.05, loop.close).start()
    with pytest.raises(Interrupt):
        step._wait(never_run())
    with pytest.raises(Interrupt):  # closed before the call: ends at once
        step._wait(never_run())
