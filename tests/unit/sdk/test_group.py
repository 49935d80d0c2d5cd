"""ctx.group.parallel (WAIT and RACE) and waits/invokes inside it, over one execution.
No broker: the engine's side is in tests/unit/fold/test_pending.py."""

from __future__ import annotations

import asyncio
from typing import Any

import sdk
from sdk._execution import ExecutionResult
from tests.unit.sdk.test_execution import define, err, make_task, ok, only, run
from tests.unit.sdk.test_waits import PAID, child
from topics import records
from topics.codec import decode, encode


def ops(result: ExecutionResult) -> list[tuple[str, str | None]]:
    return [(o.op, o.step_id) for o in result.outcomes]


def test_parallel_mode_is_exported_with_inngest_names() -> None:
    assert [m.name for m in sdk.ParallelMode] == ["WAIT", "RACE"]
    assert "ParallelMode" in sdk.__all__ and "Group" in sdk.__all__


def test_group_parallel_waits_for_every_line_and_step_parallel_is_a_synonym() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        a = await ctx.group.parallel((lambda: ctx.step.run("a", lambda: 1),
                                      lambda: ctx.step.run("b", lambda: 2)))
        c = await ctx.step.parallel((lambda: ctx.step.run("c", lambda: 3),),
                                    parallel_mode=sdk.ParallelMode.WAIT)
        return [*a, *c]

    assert ops(run(define(fn), make_task())) == [(records.STEP_COMPLETED, "a"),
                                                 (records.STEP_COMPLETED, "b")]
    o = only(run(define(fn), make_task({"a": ok(1), "b": ok(2), "c": ok(3)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, [1, 2, 3])


def test_wait_invoke_and_steps_are_reported_together_with_progress() -> None:
    target = child()

    async def fn(ctx: sdk.Context) -> Any:
        await ctx.group.parallel((
            lambda: ctx.step.run("a", lambda: 1),
            lambda: ctx.step.wait_for_event("w", event="e", timeout="1h"),
            lambda: ctx.step.invoke("i", function=target, data={"n": 1}),
            lambda: ctx.step.send_event("tell", sdk.Event(name="x")),
        ))

    result = run(define(fn), make_task())
    assert ops(result) == [(records.STEP_COMPLETED, "a"), (records.STEP_WAIT, "w"),
                           (records.STEP_INVOKE, "i"), (records.STEP_COMPLETED, "tell")]
    assert result.progress and list(result.sends) == ["tell"]


def test_pauses_alone_report_no_progress() -> None:
    target = child()

    async def fn(ctx: sdk.Context) -> Any:
        return list(await ctx.group.parallel(
            [lambda n=n: ctx.step.invoke(f"c{n}", function=target, data={"n": n})
             for n in range(3)]))

    result = run(define(fn), make_task())
    assert ops(result) == [(records.STEP_INVOKE, f"c{n}") for n in range(3)]
    assert not result.progress
    # One child answered: the others are reported again (the engine ignores them).
    result = run(define(fn), make_task({"c1": ok({"n": 1})}))
    assert ops(result) == [(records.STEP_INVOKE, "c0"), (records.STEP_INVOKE, "c2")]
    o = only(run(define(fn), make_task({f"c{n}": ok(n * 10) for n in range(3)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, [0, 10, 20])


def fan_out() -> sdk.Function:
    """Invokes three children in one group; a failed child's line returns its error name."""
    target = child()

    async def fn(ctx: sdk.Context) -> Any:
        async def line(n: int) -> Any:
            try:
                return await ctx.step.invoke(f"c{n}", function=target, data={"n": n})
            except sdk.StepError as exc:
                return f"failed: {exc.name}"
        return list(await ctx.group.parallel([lambda n=n: line(n) for n in range(3)]))

    return define(fn)


def test_a_failed_child_raises_step_error_in_its_line_only() -> None:
    o = only(run(fan_out(), make_task({"c0": ok(0), "c1": err("ValueError"), "c2": ok(2)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, [0, "failed: ValueError", 2])


def test_wait_result_is_an_event_inside_a_group() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        a, paid = await ctx.group.parallel((
            lambda: ctx.step.run("a", lambda: 1),
            lambda: ctx.step.wait_for_event("w", event="e", timeout="1h")))
        return [a, paid.name if paid else None]

    o = only(run(define(fn), make_task({"a": ok(1), "w": ok(PAID)})))
    assert o.output == [1, "shop/invoice.paid"]
    o = only(run(define(fn), make_task({"a": ok(1), "w": ok(None)})))
    assert o.output == [1, None]  # timed out


# -- RACE -----------------------------------------------------------------------------


def race_fn(calls: list[str]) -> sdk.Function:
    async def fn(ctx: sdk.Context) -> Any:
        def step(name: str) -> Any:
            def handler() -> str:
                calls.append(name)
                return name
            return ctx.step.run(name, handler)

        async def slow() -> Any:
            await step("s1")
            return await step("s2")

        won = await ctx.group.parallel((slow, lambda: ctx.step.wait_for_event(
            "w", event="e", timeout="1h")), parallel_mode=sdk.ParallelMode.RACE)
        return won.name if isinstance(won, sdk.Event) else won

    return define(fn)


def test_race_with_nothing_finished_runs_every_line() -> None:
    calls: list[str] = []
    result = run(race_fn(calls), make_task())
    assert ops(result) == [(records.STEP_COMPLETED, "s1"), (records.STEP_WAIT, "w")]
    assert calls == ["s1"] and result.progress


def test_race_returns_the_first_line_finished_without_starting_the_others() -> None:
    calls: list[str] = []
    # The wait resolved; the other line has a step never run: it is not started.
    o = only(run(race_fn(calls), make_task({"s1": ok("s1"), "w": ok(PAID)})))
    assert (o.op, o.output) == (records.FUNCTION_COMPLETED, "shop/invoice.paid")
    assert calls == []


def test_race_winner_is_the_first_recorded_whatever_the_list_order() -> None:
    calls: list[str] = []
    # Both lines finished: the memo's order (the order outcomes were recorded) decides.
    wait_first = {"w": ok(PAID), "s1": ok("s1"), "s2": ok("s2")}
    steps_first = {"s1": ok("s1"), "s2": ok("s2"), "w": ok(PAID)}
    assert only(run(race_fn(calls), make_task(wait_first))).output == "shop/invoice.paid"
    assert only(run(race_fn(calls), make_task(steps_first))).output == "s2"
    # A line is as late as its last step: s2 recorded after the wait loses.
    late = {"s1": ok("s1"), "w": ok(PAID), "s2": ok("s2")}
    assert only(run(race_fn(calls), make_task(late))).output == "shop/invoice.paid"
    assert calls == []


def test_race_winner_error_is_raised() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        try:
            return await ctx.group.parallel(
                (lambda: ctx.step.run("a", lambda: 1), lambda: ctx.step.run("b", lambda: 2)),
                parallel_mode=sdk.ParallelMode.RACE)
        except sdk.StepError as exc:
            return f"lost: {exc.step_id}"

    o = only(run(define(fn), make_task({"b": err(), "a": ok(1)})))
    assert o.output == "lost: b"


def test_race_steps_after_the_group_get_the_same_ids_every_time() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        won = await ctx.group.parallel(
            (lambda: ctx.step.run("x", lambda: 1), lambda: ctx.step.run("x", lambda: 2)),
            parallel_mode=sdk.ParallelMode.RACE)
        return [won, await ctx.step.run("x", lambda: 3)]

    # The replay looking for a winner hands out no step ids of its own.
    assert ops(run(define(fn), make_task())) == [(records.STEP_COMPLETED, "x"),
                                                 (records.STEP_COMPLETED, "x:1")]
    result = run(define(fn), make_task({"x": ok(1), "x:1": ok(2)}))
    assert ops(result) == [(records.STEP_COMPLETED, "x:2")]


def test_bad_parallel_arguments_raise_type_error() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        problems = []
        for call in (
            lambda: ctx.group.parallel((), parallel_mode="race"),  # type: ignore[call-overload]
            lambda: ctx.group.parallel((asyncio.get_running_loop().create_future(),),
                                       parallel_mode=sdk.ParallelMode.RACE),
            lambda: ctx.group.parallel((1,)),  # type: ignore[arg-type]
        ):
            try:
                await call()
            except TypeError as exc:
                problems.append(str(exc))
        return problems

    o = only(run(define(fn), make_task()))
    assert o.op == records.FUNCTION_COMPLETED, o
    assert "parallel_mode must be sdk.ParallelMode" in o.output[0]
    assert "RACE takes callables" in o.output[1]
    assert "callables returning awaitables" in o.output[2]


def test_an_empty_group_returns_at_once_and_an_empty_race_is_an_error() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        empty = await ctx.group.parallel(())
        try:
            await ctx.group.parallel((), parallel_mode=sdk.ParallelMode.RACE)
        except ValueError as exc:
            return [list(empty), str(exc)]
        return "no error"

    o = only(run(define(fn), make_task()))
    assert o.output == [[], "parallel with ParallelMode.RACE needs at least one line"]


def test_progress_is_on_the_wire_only_when_set() -> None:
    plain = records.OutcomesReported("R", 1, [], "w", 5)
    assert b"progress" not in encode(plain) and decode(encode(plain)) == plain
    marked = records.OutcomesReported("R", 1, [], "w", 5, progress=True)
    assert decode(encode(marked)) == marked


def test_sync_functions_have_the_same_group() -> None:
    def fn(ctx: sdk.ContextSync) -> Any:
        both = ctx.group.parallel((lambda: ctx.step.run("a", lambda: 1),
                                   lambda: ctx.step.run("b", lambda: 2)))
        won = ctx.step.parallel((lambda: ctx.step.run("c", lambda: 3),
                                 lambda: ctx.step.run("d", lambda: 4)),
                                parallel_mode=sdk.ParallelMode.RACE)
        return [list(both), won]

    assert ops(run(define(fn), make_task({"a": ok(1), "b": ok(2)}))) == [
        (records.STEP_COMPLETED, "c"), (records.STEP_COMPLETED, "d")]
    o = only(run(define(fn), make_task({"a": ok(1), "b": ok(2), "d": ok(4), "c": ok(3)})))
    assert o.output == [[1, 2], 4]


def test_a_fan_out_of_invokes_runs_under_sdk_testing() -> None:
    result = sdk.testing.trigger(fan_out(), sdk.Event(name="shop/x"), step_stubs={
        "c0": lambda data: data["n"] * 10, "c1": ValueError("no"), "c2": 20})
    assert (result.status, result.output) == ("completed", [0, "failed: ValueError", 20])


def test_sdk_testing_picks_the_race_winner_the_engine_would() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        won = await ctx.group.parallel(
            (lambda: ctx.step.wait_for_event("ok", event="review/approved", timeout="1d"),
             lambda: ctx.step.run("auto", lambda: "auto")),
            parallel_mode=sdk.ParallelMode.RACE)
        return won if isinstance(won, str) else "approved"

    # The wait's event arrives after "auto" was recorded, as on a real engine.
    result = sdk.testing.trigger(define(fn), sdk.Event(name="shop/x"),
                                 step_stubs={"ok": sdk.Event(name="review/approved")})
    assert (result.status, result.output) == ("completed", "auto")
