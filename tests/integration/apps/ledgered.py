"""An app for the worker-kill tests: every step execution appends one line to the
ledger file $STEPSTREAM_TEST_LEDGER (``run_id step pid start_ms``), written with one
O_APPEND write so lines from concurrent processes never interleave and a kill -9
loses none already written.

One run in 20 has a slow step (``b`` sleeps 3 s): a worker commits a partition only
below its lowest unfinished task, so the slow ones hold back the commit of every task
finished after them, which is what a successor must not run again.
"""

from __future__ import annotations

import asyncio
import os
import time

import sdk

client = sdk.Client(app_id="ledgered")
_LEDGER = os.environ.get("STEPSTREAM_TEST_LEDGER")
_fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if _LEDGER else None
SLOW_EVERY = 20
SLOW_S = 3.0


def ledger(run_id: str, step: str) -> None:
    if _fd is not None:
        os.write(_fd, f"{run_id} {step} {os.getpid()} {time.time_ns() // 1_000_000}\n"
                 .encode())


@client.create_function(fn_id="three", trigger=sdk.TriggerEvent(event="ledgered/go"))
async def three(ctx: sdk.Context) -> dict[str, int]:
    n = ctx.event.data["n"]

    def a() -> int:
        ledger(ctx.run_id, "a")
        return n + 1

    async def b() -> int:
        ledger(ctx.run_id, "b")
        if n % SLOW_EVERY == 0:
            await asyncio.sleep(SLOW_S)
        return n + 2

    def c() -> int:
        ledger(ctx.run_id, "c")
        return n + 3

    return {"a": await ctx.step.run("a", a), "b": await ctx.step.run("b", b),
            "c": await ctx.step.run("c", c)}
