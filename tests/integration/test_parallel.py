"""ctx.group.parallel end to end on the real broker: a fan-out of invokes collected in
one group (a failed child fails its line only), wait_for_event beside step.run, RACE
deterministic on replay, and a cancelled run's pending steps. One engine and one
worker for the module."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import sdk
from tests.integration.harness import Stack, app_stack, wait_for
from topics.settings import Settings

pytestmark = pytest.mark.kafka

FNS = ("square", "fan-out", "beside", "race", "stoppable")
LONG = datetime.timedelta(seconds=60)


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="par", settings=settings)

    @client.create_function(fn_id="square", retries=0,
                            trigger=sdk.TriggerEvent(event="par/never-square"))
    async def square(ctx: sdk.Context) -> int:
        n = int(ctx.event.data["n"])

        def compute() -> int:
            if ctx.event.data.get("fail"):
                raise sdk.NonRetriableError(f"no square for {n}")
            return n * n
        return await ctx.step.run("compute", compute)

    @client.create_function(fn_id="fan-out", trigger=sdk.TriggerEvent(event="par/fan-out"))
    async def fan_out(ctx: sdk.Context) -> list[Any]:
        fail = ctx.event.data.get("fail")

        async def line(n: int) -> Any:
            try:
                return await ctx.step.invoke(f"square-{n}", function=square,
                                             data={"n": n, "fail": n == fail})
            except sdk.StepError as exc:
                return f"failed: {exc}"
        return list(await ctx.group.parallel(
            [lambda n=n: line(n) for n in range(ctx.event.data["count"])]))

    @client.create_function(fn_id="beside", trigger=sdk.TriggerEvent(event="par/beside"))
    async def beside(ctx: sdk.Context) -> Any:
        async def work() -> str:
            a = await ctx.step.run("a", lambda: "a")
            return a + await ctx.step.run("b", lambda: "b")

        ab, approved = await ctx.group.parallel((
            work,
            lambda: ctx.step.wait_for_event("approved", event="par/approved", timeout=LONG,
                                            match="data.key")))
        return [ab, approved.data["by"] if approved else None]

    @client.create_function(fn_id="race", trigger=sdk.TriggerEvent(event="par/race"))
    async def race(ctx: sdk.Context) -> Any:
        # The wait comes first in the list: the winner is the first recorded, not the
        # first given.
        won = await ctx.group.parallel((
            lambda: ctx.step.wait_for_event("late", event="par/late", timeout=LONG,
                                            match="data.key"),
            lambda: ctx.step.run("fast", lambda: "fast")),
            parallel_mode=sdk.ParallelMode.RACE)
        # Holds the run after the race, so the loser can resolve before it replays.
        await ctx.step.wait_for_event("hold", event="par/hold", timeout=LONG,
                                      match="data.key")
        return won if isinstance(won, str) else "late"

    @client.create_function(fn_id="stoppable", trigger=sdk.TriggerEvent(event="par/stoppable"),
                            cancel=[sdk.Cancel(event="par/stop", match="data.key")])
    async def stoppable(ctx: sdk.Context) -> Any:
        return await ctx.group.parallel((
            lambda: ctx.step.invoke("child", function=square, data={"n": 2}, timeout=LONG),
            lambda: ctx.step.wait_for_event("x", event="par/x", timeout=LONG),
            lambda: ctx.step.wait_for_event("y", event="par/y", timeout=LONG),
            lambda: ctx.step.sleep("nap", LONG)))

    return client


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app_stack(broker, tmp_path_factory.mktemp("parallel"), make_client,
                   [f"par-{f}" for f in FNS]) as s:
        yield s


def pending_of(stack: Stack, event_id: str, *step_ids: str) -> dict[str, Any]:
    """The run of ``event_id`` once every one of ``step_ids`` is pending in the engine."""
    def ready() -> dict[str, Any] | None:
        runs = stack.runs_for(event_id)
        held = runs[0].get("pending") or {} if runs else {}
        return runs[0] if runs and set(step_ids) <= set(held) else None
    return wait_for(ready, 30, f"steps {step_ids} pending")


def test_fan_out_of_50_invokes_collects_every_output_and_one_failure(stack: Stack) -> None:
    event_id = stack.send("par/fan-out", {"count": 50, "fail": 7})
    run = stack.finished_run(event_id, timeout=90)
    assert run["status"] == "completed", run["error"]
    out = run["output"]
    assert out[7].startswith("failed: ") and "no square for 7" in out[7]
    assert out[:7] + out[8:] == [n * n for n in range(50) if n != 7]
    assert run["steps"]["square-7"]["status"] == "failed"
    assert sum(e["type"] == "invoke.requested" for e in run["timeline"]) == 50
    # At most one hand-over per child's end, plus the first task: no busy loop.
    tasks = sum(e["type"] == "task.dispatched" for e in run["timeline"])
    assert tasks <= 51


def test_wait_for_event_beside_step_run(stack: Stack) -> None:
    key = uuid.uuid4().hex
    event_id = stack.send("par/beside", {"key": key})
    # The other line goes on while the wait is registered: both its steps complete.
    def line_done() -> dict[str, Any] | None:
        runs = stack.runs_for(event_id)
        steps = runs[0]["steps"] if runs else {}
        return runs[0] if all(steps.get(s, {}).get("status") == "completed"
                              for s in ("a", "b")) else None
    run = wait_for(line_done, 30, "steps a and b completed")
    assert run["steps"]["approved"]["status"] == "waiting"
    pending_of(stack, event_id, "approved")
    stack.send("par/approved", {"key": key, "by": "ops"})
    run = stack.finished_run(event_id)
    assert run["status"] == "completed", run["error"]
    assert run["output"] == ["ab", "ops"]


def test_race_returns_the_first_recorded_line_on_every_replay(stack: Stack) -> None:
    key = uuid.uuid4().hex
    event_id = stack.send("par/race", {"key": key})
    pending_of(stack, event_id, "late", "hold")  # "fast" won; the run holds after it
    # The loser's event arrives and the run replays: "fast" still wins.
    stack.send("par/late", {"key": key})
    wait_for(lambda: stack.runs_for(event_id)[0]["steps"]["late"]["status"] == "completed",
             30, "the loser's wait resolved")
    stack.send("par/hold", {"key": key})
    run = stack.finished_run(event_id)
    assert run["status"] == "completed", run["error"]
    assert run["output"] == "fast"


def test_cancel_clears_every_pending_step(stack: Stack) -> None:
    key = uuid.uuid4().hex
    event_id = stack.send("par/stoppable", {"key": key})
    pending_of(stack, event_id, "x", "y", "nap")
    stack.send("par/stop", {"key": key})
    run = stack.finished_run(event_id)
    assert run["status"] == "cancelled"
    assert "pending" not in run and run["waiting"] is None
    assert run["cancelled_by"]["kind"] == "event"
