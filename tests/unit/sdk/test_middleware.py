"""Middleware hooks on a pure execution: Inngest's order, the reverse order of "after"
hooks, client before function, one instance per execution, transforms. No broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import sdk
from sdk._execution import ExecutionResult, execute
from sdk._middleware import send_with_hooks, send_with_hooks_sync
from topics import records
from topics.settings import Settings

NOW = 1_700_000_000_000
RUN_ID = "01HGW1J8Z6Y5Q4B3C2D1E0F9GH"
SETTINGS = Settings(brokers="unused:9092")


def make_task(steps: dict[str, Any] | None = None,
              data: dict[str, Any] | None = None) -> records.Task:
    event = {"name": "shop/order.created", "data": data or {"order_id": 7},
             "id": "01HGW1J8Z6Y5Q4B3C2D1E0F9GH", "ts": NOW - 5}
    return records.Task(run_id=RUN_ID, fn_id="shop-fn", app_id="shop", seq=1,
                        partition_key=RUN_ID, event=event, events=[event], attempt=0,
                        steps=steps or {}, step_attempts={}, ts=NOW)


def run(function: sdk.Function, task: records.Task) -> ExecutionResult:
    return asyncio.run(execute(function, task, settings=SETTINGS, now_ms=lambda: NOW))


HOOKS = ("transform_input", "before_memoization", "after_memoization", "before_execution",
         "after_execution", "before_response", "before_send_events", "after_send_events")


def recorder(log: list[str], tag: str, base: type = sdk.MiddlewareSync) -> type:
    """A middleware class appending "<tag>.<hook>" to ``log`` for every hook."""

    def hook(name: str) -> Any:
        if base is sdk.Middleware:
            async def call_async(self: Any, *args: Any) -> None:
                await asyncio.sleep(0)
                log.append(f"{tag}.{name}")
            return call_async

        def call(self: Any, *args: Any) -> None:
            log.append(f"{tag}.{name}")
        return call

    def transform_output(self: Any, result: sdk.TransformOutputResult) -> None:
        what = result.step.id if result.step is not None else "function"
        log.append(f"{tag}.transform_output:{what}")

    return type(f"Rec{tag}", (base,), {**{h: hook(h) for h in HOOKS},
                                      "transform_output": transform_output})


def define(handler: Any, client_mw: list[Any], fn_mw: list[Any]) -> sdk.Function:
    client = sdk.Client(app_id="shop", brokers="unused:9092", middleware=client_mw)
    return client.create_function(fn_id="fn", trigger=sdk.TriggerEvent(event="shop/*"),
                                  middleware=fn_mw)(handler)


def test_a_first_execution_calls_every_hook_in_order_after_hooks_reversed() -> None:
    log: list[str] = []

    async def fn(ctx: sdk.Context) -> Any:
        log.append("body")
        return await ctx.step.run("a", lambda: log.append("step a") or 1)

    fn_ = define(fn, [recorder(log, "C")], [recorder(log, "F", sdk.Middleware)])
    result = run(fn_, make_task())
    assert result.outcomes[0].op == records.STEP_COMPLETED
    assert log == [
        "C.transform_input", "F.transform_input",
        "C.before_memoization", "F.before_memoization",
        # Nothing memoized: new code starts at once.
        "F.after_memoization", "C.after_memoization",
        "C.before_execution", "F.before_execution",
        "body", "step a",
        "F.after_execution", "C.after_execution",
        "F.transform_output:a", "C.transform_output:a",
        "C.before_response", "F.before_response",
    ]


def test_execution_starts_when_the_last_memoized_step_is_passed() -> None:
    log: list[str] = []

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("a", lambda: 1)
        log.append("after a")
        await ctx.step.sleep("nap", "1s")
        log.append("after nap")
        await ctx.step.run("b", lambda: 2)
        return "done"

    # "a" and "nap" memoized: memoization ends when "nap" (a sleep) is passed; the
    # hooks fire at the next step, the first new one.
    fn_ = define(fn, [recorder(log, "C")], [])
    result = run(fn_, make_task({"a": {"data": 1}, "nap": {"data": None}}))
    assert result.outcomes[0].step_id == "b"
    assert log.index("C.before_memoization") < log.index("after a")
    assert log.index("after nap") < log.index("C.after_memoization")
    assert log.index("C.before_execution") < log.index("C.after_execution")

    # With "a" the only memo, memoization ends as it is returned, before user code
    # after it runs: exactly where Inngest calls before_execution.
    log.clear()
    run(fn_, make_task({"a": {"data": 1}}))
    assert log.index("C.before_execution") < log.index("after a")


def test_a_function_ending_on_replay_still_pairs_before_and_after_execution() -> None:
    log: list[str] = []

    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.run("a", lambda: 1)

    result = run(define(fn, [recorder(log, "C")], []), make_task({"a": {"data": 5}}))
    assert (result.outcomes[0].op, result.outcomes[0].output) == (records.FUNCTION_COMPLETED, 5)
    assert log == ["C.transform_input", "C.before_memoization", "C.after_memoization",
                   "C.before_execution", "C.after_execution",
                   "C.transform_output:function", "C.before_response"]


def test_one_instance_per_execution_with_client_and_raw_request() -> None:
    made: list[Any] = []

    class Seen(sdk.MiddlewareSync):
        def __init__(self, client: sdk.Client, raw_request: object) -> None:
            super().__init__(client, raw_request)
            made.append(self)

    async def fn(ctx: sdk.Context) -> Any:
        return 1

    fn_ = define(fn, [], [Seen])
    task = make_task()
    run(fn_, task)
    run(fn_, task)
    assert len(made) == 2 and made[0] is not made[1]
    assert made[0].client is fn_.client and made[0].raw_request is task


def test_transform_input_changes_what_the_function_sees() -> None:
    class Shift(sdk.MiddlewareSync):
        def transform_input(self, ctx: sdk.Context, function: sdk.Function,
                            steps: sdk.StepMemos) -> None:
            assert function.fn_id == "fn" and steps.size == 1
            for memo in steps.values():
                memo.data = memo.data * 10
            ctx.event.data = {**ctx.event.data, "seen": True}

    async def fn(ctx: sdk.Context) -> Any:
        a = await ctx.step.run("a", lambda: 1)
        return [a, ctx.event.data]

    task = make_task({"a": {"data": 4}})
    result = run(define(fn, [Shift], []), task)
    assert result.outcomes[0].output == [40, {"order_id": 7, "seen": True}]
    assert task.steps == {"a": {"data": 4}}  # the task itself is left alone


def test_transform_output_changes_what_is_stored_and_is_checked_again() -> None:
    class Wrap(sdk.MiddlewareSync):
        def transform_output(self, result: sdk.TransformOutputResult) -> None:
            if result.has_output():
                result.output = {"wrapped": result.output}

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.step.run("a", lambda: 1)
        return "end"

    fn_ = define(fn, [], [Wrap])
    assert run(fn_, make_task()).outcomes[0].output == {"wrapped": 1}
    assert run(fn_, make_task({"a": {"data": 1}})).outcomes[0].output == {"wrapped": "end"}

    class Bloat(sdk.MiddlewareSync):
        def transform_output(self, result: sdk.TransformOutputResult) -> None:
            result.output = "x" * (SETTINGS.max_step_output_bytes + 1)

    o = run(define(fn, [], [Bloat]), make_task()).outcomes[0]
    assert (o.op, o.error["name"], o.retriable) == (records.STEP_FAILED, "OutputTooLarge",
                                                    False)


def test_transform_output_sees_errors_and_may_replace_them() -> None:
    seen: list[Any] = []

    class Errors(sdk.MiddlewareSync):
        def transform_output(self, result: sdk.TransformOutputResult) -> None:
            seen.append((result.step.op if result.step else None, result.has_output(),
                         type(result.error).__name__))
            if result.step is None:
                result.error = RuntimeError("redacted")

    async def fn(ctx: sdk.Context) -> Any:
        raise ValueError("secret detail")

    o = run(define(fn, [Errors], []), make_task()).outcomes[0]
    assert seen == [(None, False, "ValueError")]
    assert (o.op, o.error["name"], o.error["message"]) == (records.FUNCTION_FAILED,
                                                           "RuntimeError", "redacted")

    async def failing_step(ctx: sdk.Context) -> Any:
        await ctx.step.run("a", lambda: 1 / 0)

    seen.clear()
    o = run(define(failing_step, [Errors], []), make_task()).outcomes[0]
    assert seen == [(records.STEP_FAILED, False, "StepError")]
    assert o.error["name"] == "ZeroDivisionError"  # unchanged unless replaced


def test_a_failing_hook_fails_the_execution_and_user_code_cannot_catch_it() -> None:
    class Broken(sdk.MiddlewareSync):
        def before_execution(self) -> None:
            raise RuntimeError("hook broke")

    ran: list[str] = []

    async def fn(ctx: sdk.Context) -> Any:
        try:
            await ctx.step.run("a", lambda: 1)
        except Exception:
            ran.append("caught")
        ran.append("after a")
        return await ctx.step.run("b", lambda: ran.append("b"))

    o = run(define(fn, [Broken], []), make_task({"a": {"data": 1}})).outcomes
    assert [(x.op, x.error["message"], x.retriable) for x in o] == [
        (records.FUNCTION_FAILED, "hook broke", True)]
    assert ran == []

    class BrokenInput(sdk.MiddlewareSync):
        def transform_input(self, *args: Any) -> None:
            raise KeyError("no key")

    o = run(define(fn, [BrokenInput], []), make_task()).outcomes
    assert [(x.op, x.error["name"]) for x in o] == [(records.FUNCTION_FAILED, "KeyError")]
    assert ran == []


def test_send_event_hooks_see_copies_and_the_ids() -> None:
    log: list[Any] = []
    original = sdk.Event(name="shop/mail", data={"to": "a@b.c"})

    class Tag(sdk.Middleware):
        async def before_send_events(self, events: list[sdk.Event]) -> None:
            for e in events:
                e.data = {**e.data, "tagged": True}

        async def after_send_events(self, result: sdk.SendEventsResult) -> None:
            log.append(result)

    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.send_event("mail", original)

    result = run(define(fn, [], [Tag]), make_task())
    (sent,) = result.sends["mail"]
    assert sent.data == {"to": "a@b.c", "tagged": True}
    assert original.data == {"to": "a@b.c"}
    assert log == [sdk.SendEventsResult([sent.id])]

    class Refuse(sdk.MiddlewareSync):
        def before_send_events(self, events: list[sdk.Event]) -> None:
            raise RuntimeError("not now")

    result = run(define(fn, [], [Refuse]), make_task())
    o = result.outcomes[0]
    assert (o.op, o.step_id, o.retriable, result.sends) == (records.STEP_FAILED, "mail",
                                                            True, {})


def test_client_send_hooks_run_around_the_send() -> None:
    log: list[str] = []
    client = sdk.Client(app_id="shop", brokers="unused:9092",
                        middleware=[recorder(log, "C")])
    got: list[list[sdk.Event]] = []

    def send(events: list[sdk.Event]) -> list[str]:
        got.append(events)
        log.append("send")
        return ["id1"]

    assert send_with_hooks_sync(client, sdk.Event(name="x"), send) == ["id1"]
    assert log == ["C.before_send_events", "send", "C.after_send_events"]
    assert isinstance(got[0], list)

    async def send_async(events: list[sdk.Event]) -> list[str]:
        raise ConnectionError("down")

    log.clear()
    async_client = sdk.Client(app_id="shop", brokers="unused:9092",
                              middleware=[recorder(log, "A", sdk.Middleware)])
    with pytest.raises(ConnectionError):
        asyncio.run(send_with_hooks(async_client, [sdk.Event(name="x")], send_async))
    assert log == ["A.before_send_events", "A.after_send_events"]


def test_bad_middleware_arguments_are_named() -> None:
    class NotOne:
        pass

    with pytest.raises(TypeError, match="middleware must be a list"):
        sdk.Client(app_id="shop", middleware=sdk.MiddlewareSync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not instances"):
        sdk.Client(app_id="shop", middleware=[sdk.MiddlewareSync(None, None)])  # type: ignore[arg-type,list-item]
    client = sdk.Client(app_id="shop")
    with pytest.raises(TypeError, match="function 'fn': middleware NotOne must subclass"):
        client.create_function(fn_id="fn", trigger=sdk.TriggerEvent(event="x"),
                               middleware=[NotOne])  # type: ignore[list-item]


def test_parallel_lines_wait_for_before_execution_and_each_step_is_transformed() -> None:
    log: list[str] = []

    class Slow(sdk.Middleware):
        async def before_execution(self) -> None:
            await asyncio.sleep(0.01)
            log.append("before_execution")

        async def transform_output(self, result: sdk.TransformOutputResult) -> None:
            log.append(f"out:{result.step.id if result.step else 'fn'}")

    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.parallel([
            lambda: ctx.step.run("x", lambda: log.append("x") or 1),
            lambda: ctx.step.run("y", lambda: log.append("y") or 2),
            lambda: ctx.step.run("z", lambda: log.append("z") or 3)])

    # "x" is the last memo: its line starts execution (and sleeps in the hook) while
    # the other lines reach their new steps; they wait for the hook to finish.
    result = run(define(fn, [], [Slow]), make_task({"x": {"data": 1}}))
    assert [o.step_id for o in result.outcomes] == ["y", "z"]
    assert log[0] == "before_execution"
    assert sorted(log[1:3]) == ["y", "z"] and log[3:] == ["out:y", "out:z"]


def test_a_middleware_that_cannot_be_made_fails_the_execution() -> None:
    class Unmakeable(sdk.MiddlewareSync):
        def __init__(self, client: sdk.Client, raw_request: object) -> None:
            raise RuntimeError("no config")

    ran: list[str] = []

    async def fn(ctx: sdk.Context) -> Any:
        ran.append("body")

    o = run(define(fn, [Unmakeable], []), make_task()).outcomes
    assert [(x.op, x.error["message"]) for x in o] == [(records.FUNCTION_FAILED, "no config")]
    assert ran == []
