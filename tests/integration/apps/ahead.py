"""An app for the run-ahead tests: every step execution appends ``run_id step pid
start_ms`` to the ledger file $STEPSTREAM_TEST_LEDGER (one O_APPEND write per line, so
a kill -9 loses none already written). Step ``b`` of ``gated`` waits, after writing its
line, until the file $STEPSTREAM_TEST_GATE exists."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import sdk

client = sdk.Client(app_id="ahead")
_LEDGER = os.environ.get("STEPSTREAM_TEST_LEDGER")
_GATE = os.environ.get("STEPSTREAM_TEST_GATE")
_fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if _LEDGER else None
MANY_STEPS = 150
MANY_STEP_S = 0.1


def ledger(run_id: str, step: str) -> None:
    if _fd is not None:
        os.write(_fd, f"{run_id} {step} {os.getpid()} {time.time_ns() // 1_000_000}\n"
                 .encode())


def executions(run_id: str, step: str) -> int:
    if not _LEDGER or not Path(_LEDGER).exists():
        return 0
    return sum(1 for line in Path(_LEDGER).read_text().splitlines()
               if line.split()[:2] == [run_id, step])


def logged(run_id: str, step: str, value: int) -> int:
    ledger(run_id, step)
    return value


@client.create_function(fn_id="gated", trigger=sdk.TriggerEvent(event="ahead/gated"))
async def gated(ctx: sdk.Context) -> list[int]:
    async def b() -> int:
        ledger(ctx.run_id, "b")
        while _GATE and not Path(_GATE).exists():
            await asyncio.sleep(0.05)
        return 2

    return [await ctx.step.run("a", logged, ctx.run_id, "a", 1),
            await ctx.step.run("b", b),
            await ctx.step.run("c", logged, ctx.run_id, "c", 3)]


@client.create_function(fn_id="many", trigger=sdk.TriggerEvent(event="ahead/many"))
async def many(ctx: sdk.Context) -> int:
    def step(i: int) -> int:
        ledger(ctx.run_id, f"s{i}")
        time.sleep(MANY_STEP_S)
        return i

    total = 0
    for i in range(MANY_STEPS):
        total += await ctx.step.run(f"s{i}", step, i)
    return total


@client.create_function(fn_id="flaky", trigger=sdk.TriggerEvent(event="ahead/flaky"),
                        retries=2)
async def flaky(ctx: sdk.Context) -> list[int]:
    def b() -> int:
        ledger(ctx.run_id, "b")
        if executions(ctx.run_id, "b") == 1:
            raise RuntimeError("first attempt fails")
        return 2

    return [await ctx.step.run("a", logged, ctx.run_id, "a", 1),
            await ctx.step.run("b", b),
            await ctx.step.run("c", logged, ctx.run_id, "c", 3)]


@client.create_function(fn_id="sleepy", trigger=sdk.TriggerEvent(event="ahead/sleepy"))
async def sleepy(ctx: sdk.Context) -> list[int]:
    a = await ctx.step.run("a", logged, ctx.run_id, "a", 1)
    b = await ctx.step.run("b", logged, ctx.run_id, "b", 2)
    await ctx.step.sleep("nap", "1s")
    return [a, b, await ctx.step.run("c", logged, ctx.run_id, "c", 3)]
