"""An app run by worker child processes in the durability tests.

Each step execution appends a line to $STEPSTREAM_TEST_JOURNAL, so the test can count
executions across processes. The step "slow" waits until the file $STEPSTREAM_TEST_GATE
exists, which lets a test kill the worker while the step is executing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import sdk

client = sdk.Client(app_id="durable")
JOURNAL = Path(os.environ.get("STEPSTREAM_TEST_JOURNAL", "/dev/null"))
GATE = Path(os.environ.get("STEPSTREAM_TEST_GATE", "/nonexistent"))


def journal(what: str, run_id: str) -> None:
    with JOURNAL.open("a") as f:
        f.write(f"{what} {run_id} {os.getpid()}\n")


@client.create_function(fn_id="gated", trigger=sdk.TriggerEvent(event="durable/gated"))
async def gated(ctx: sdk.Context) -> str:
    def first() -> str:
        journal("first", ctx.run_id)
        return "one"

    def slow() -> str:
        journal("slow-start", ctx.run_id)
        while not GATE.exists():  # the test opens the gate after killing a worker
            time.sleep(0.01)
        journal("slow-end", ctx.run_id)
        return "two"

    def third() -> str:
        journal("third", ctx.run_id)
        return "three"

    a = await ctx.step.run("first", first)
    b = await ctx.step.run("slow", slow)
    c = await ctx.step.run("third", third)
    return f"{a}-{b}-{c}"


@client.create_function(fn_id="three-steps", trigger=sdk.TriggerEvent(event="durable/load"))
async def three_steps(ctx: sdk.Context) -> dict[str, int]:
    n = ctx.event.data["n"]
    a = await ctx.step.run("a", lambda: n + 1)
    b = await ctx.step.run("b", lambda: a * 2)
    pid = await ctx.step.run("c", os.getpid)
    return {"n": n, "b": b, "pid": pid}


@client.create_function(fn_id="invoker", trigger=sdk.TriggerEvent(event="durable/invoker"))
async def invoker(ctx: sdk.Context) -> str:
    # The child is the gated function: a test kills its worker mid-step.
    return await ctx.step.invoke("child", function=gated, data={})


@client.create_function(fn_id="awaiting", trigger=sdk.TriggerEvent(event="durable/awaiting"),
                        cancel=[sdk.Cancel(event="durable/abort", match="data.key")])
async def awaiting(ctx: sdk.Context) -> object:
    go = await ctx.step.wait_for_event("go", event="durable/go", match="data.key",
                                       timeout="2m")
    return None if go is None else go.data
