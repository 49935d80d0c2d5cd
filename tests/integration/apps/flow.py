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
