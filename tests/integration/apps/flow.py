"""An app for the flow-control tests: every step execution appends ``fn run_id step key
start_ms end_ms`` to the ledger file $STEPSTREAM_TEST_LEDGER when it ends (one O_APPEND
write per line), so a test computes what the limits promise from what really executed,
never from a counter the engine reports about itself."""

from __future__ import annotations

import os
import time
from typing import Any

import sdk

client = sdk.Client(app_id="flow")
_LEDGER = os.environ.get("STEPSTREAM_TEST_LEDGER")
_fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if _LEDGER else None
STEP_S = 0.2


def work(fn: str, run_id: str, step: str, key: Any, seconds: float = STEP_S) -> str:
    start = time.time_ns() // 1_000_000
    time.sleep(seconds)
    end = time.time_ns() // 1_000_000
    if _fd is not None:
        os.write(_fd, f"{fn} {run_id} {step} {key} {start} {end}\n".encode())
    return step


@client.create_function(fn_id="limited", trigger=sdk.TriggerEvent(event="flow/limited"),
                        concurrency=sdk.Concurrency(limit=3))
async def limited(ctx: sdk.Context) -> str:
    return await ctx.step.run("work", work, "limited", ctx.run_id, "work", "-")


@client.create_function(fn_id="per-key", trigger=sdk.TriggerEvent(event="flow/per-key"),
                        concurrency=sdk.Concurrency(limit=1, key="event.data.k"))
async def per_key(ctx: sdk.Context) -> str:
    key = ctx.event.data["k"]
    return await ctx.step.run("work", work, "per-key", ctx.run_id, "work", key, 0.1)


@client.create_function(fn_id="sleepy", trigger=sdk.TriggerEvent(event="flow/sleepy"),
                        concurrency=sdk.Concurrency(limit=1))
async def sleepy(ctx: sdk.Context) -> str:
    await ctx.step.run("before", work, "sleepy", ctx.run_id, "before", "-", 0.05)
    await ctx.step.sleep("nap", 1500)
    return await ctx.step.run("after", work, "sleepy", ctx.run_id, "after", "-", 0.05)


@client.create_function(fn_id="whole-run", trigger=sdk.TriggerEvent(event="flow/whole-run"),
                        concurrency=sdk.Concurrency(limit=1, mode="run"))
async def whole_run(ctx: sdk.Context) -> str:
    await ctx.step.run("before", work, "whole-run", ctx.run_id, "before", "-", 0.05)
    await ctx.step.sleep("nap", 500)
    return await ctx.step.run("after", work, "whole-run", ctx.run_id, "after", "-", 0.05)


_GATE = os.environ.get("STEPSTREAM_TEST_GATE")


def hold(name: str) -> None:
    """Block the step until the test creates ``$STEPSTREAM_TEST_GATE/name``, so a run
    stays executing for as long as a test needs (the app polls; the test awaits)."""
    if _GATE is None:
        return
    while not os.path.exists(os.path.join(_GATE, name)):
        time.sleep(0.02)


@client.create_function(fn_id="throttled", trigger=sdk.TriggerEvent(event="flow/throttled"),
                        throttle=sdk.Throttle(limit=5, period="1s", burst=1))
async def throttled(ctx: sdk.Context) -> str:
    return await ctx.step.run("work", work, "throttled", ctx.run_id, "work", "-", 0.01)


@client.create_function(fn_id="rate-limited",
                        trigger=sdk.TriggerEvent(event="flow/rate-limited"),
                        rate_limit=sdk.RateLimit(limit=3, period="10s"))
async def rate_limited(ctx: sdk.Context) -> str:
    return await ctx.step.run("work", work, "rate-limited", ctx.run_id, "work", "-", 0.01)


@client.create_function(fn_id="prioritized",
                        trigger=sdk.TriggerEvent(event="flow/prioritized"),
                        concurrency=sdk.Concurrency(limit=1),
                        priority=sdk.Priority(run="event.data.p"))
async def prioritized(ctx: sdk.Context) -> str:
    if ctx.event.data.get("block"):
        await ctx.step.run("hold", hold, "prioritized")
    return await ctx.step.run("work", work, "prioritized", ctx.run_id, "work",
                              ctx.event.data.get("p", 0), 0.01)


@client.create_function(fn_id="single-skip", trigger=sdk.TriggerEvent(event="flow/single-skip"),
                        singleton=sdk.Singleton(mode="skip"))
async def single_skip(ctx: sdk.Context) -> str:
    await ctx.step.run("hold", hold, "single-skip")
    return await ctx.step.run("work", work, "single-skip", ctx.run_id, "work", "-", 0.01)


@client.create_function(fn_id="single-cancel",
                        trigger=sdk.TriggerEvent(event="flow/single-cancel"),
                        singleton=sdk.Singleton(key="event.data.k", mode="cancel"))
async def single_cancel(ctx: sdk.Context) -> str:
    await ctx.step.run("hold", hold, "single-cancel")
    return await ctx.step.run("work", work, "single-cancel", ctx.run_id, "work",
                              ctx.event.data["k"], 0.01)


@client.create_function(fn_id="two-limits", trigger=sdk.TriggerEvent(event="flow/two-limits"),
                        concurrency=[sdk.Concurrency(limit=1, key="event.data.k"),
                                     sdk.Concurrency(limit=2)])
async def two_limits(ctx: sdk.Context) -> str:
    return await ctx.step.run("work", work, "two-limits", ctx.run_id, "work",
                              ctx.event.data["k"], 0.1)


def _shared(fn_id: str) -> Any:
    @client.create_function(fn_id=fn_id, trigger=sdk.TriggerEvent(event=f"flow/{fn_id}"),
                            concurrency=sdk.Concurrency(limit=1, key='"shared"',
                                                        scope="env"))
    async def shared(ctx: sdk.Context) -> str:
        return await ctx.step.run("work", work, "shared", ctx.run_id, "work", fn_id, 0.1)
    return shared


env_a, env_b = _shared("env-a"), _shared("env-b")


@client.create_function(fn_id="slow-limited",
                        trigger=sdk.TriggerEvent(event="flow/slow-limited"),
                        concurrency=sdk.Concurrency(limit=2))
async def slow_limited(ctx: sdk.Context) -> str:
    await ctx.step.run("a", work, "slow-limited", ctx.run_id, "a", "-", 0.3)
    return await ctx.step.run("b", work, "slow-limited", ctx.run_id, "b", "-", 0.3)


@client.create_function(fn_id="ping", trigger=sdk.TriggerEvent(event="flow/ping"))
async def ping(ctx: sdk.Context) -> str:
    return "pong"
