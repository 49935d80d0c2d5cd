"""The app the fault campaign's workers run. Every step execution appends one line to
$STEPSTREAM_TEST_LEDGER when it ends: ``run_id step pid start_ms end_ms fn key`` (one
O_APPEND write, so lines of concurrent processes never interleave and a kill -9 loses
none already written). The checkers in tests/checkers read it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import sdk

client = sdk.Client(app_id="chaos")
_LEDGER = os.environ.get("STEPSTREAM_TEST_LEDGER")
_fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if _LEDGER else None
SLOW_EVERY = 20  # one run in 20 holds its step for SLOW_S: commits lag behind it
SLOW_S = 2.0
SLEEP_MS = 2000
LIMIT = 2
CRON = "* * * * * */2"


def _write(fn: str, run_id: str, step: str, start: int, key: Any = "-") -> None:
    if _fd is not None:
        end = time.time_ns() // 1_000_000
        os.write(_fd, f"{run_id} {step} {os.getpid()} {start} {end} {fn} {key}\n".encode())


def _now() -> int:
    return time.time_ns() // 1_000_000


async def _step(ctx: sdk.Context, fn: str, step: str, value: Any, hold_s: float = 0.0,
                key: Any = "-") -> Any:
    async def body() -> Any:
        start = _now()
        if hold_s:
            await asyncio.sleep(hold_s)
        _write(fn, ctx.run_id, step, start, key)
        return value
    return await ctx.step.run(step, body)


@client.create_function(fn_id="three", trigger=sdk.TriggerEvent(event="chaos/go"))
async def three(ctx: sdk.Context) -> dict[str, int]:
    n = int(ctx.event.data["n"])
    slow = SLOW_S if n % SLOW_EVERY == 0 else 0.0
    return {"a": await _step(ctx, "three", "a", n + 1),
            "b": await _step(ctx, "three", "b", n + 2, slow),
            "c": await _step(ctx, "three", "c", n + 3)}


@client.create_function(fn_id="sleeper", trigger=sdk.TriggerEvent(event="chaos/sleep"))
async def sleeper(ctx: sdk.Context) -> str:
    await _step(ctx, "sleeper", "before", 1)
    await ctx.step.sleep("nap", SLEEP_MS)
    return str(await _step(ctx, "sleeper", "after", "woke"))


@client.create_function(fn_id="waiter", trigger=sdk.TriggerEvent(event="chaos/wait"))
async def waiter(ctx: sdk.Context) -> Any:
    got = await ctx.step.wait_for_event("answer", event="chaos/answer", match="data.key",
                                        timeout="10m")
    return await _step(ctx, "waiter", "after", None if got is None else got.data["key"])


@client.create_function(fn_id="ticker", trigger=sdk.TriggerCron(cron=CRON))
async def ticker(ctx: sdk.Context) -> Any:
    tick = ctx.cron_tick
    key = "-" if tick is None else int(tick.timestamp() * 1000)
    return await _step(ctx, "ticker", "tick", key, key=key)


@client.create_function(fn_id="batched", trigger=sdk.TriggerEvent(event="chaos/batch"),
                        batch_events=sdk.Batch(max_size=5, timeout="2s"))
async def batched(ctx: sdk.Context) -> int:
    return int(await _step(ctx, "batched", "count", len(ctx.events)))


@client.create_function(fn_id="debounced", trigger=sdk.TriggerEvent(event="chaos/debounce"),
                        debounce=sdk.Debounce(period="1s", key="event.data.k"))
async def debounced(ctx: sdk.Context) -> Any:
    return await _step(ctx, "debounced", "last", ctx.event.data["i"], key=ctx.event.data["k"])


@client.create_function(fn_id="limited", trigger=sdk.TriggerEvent(event="chaos/limited"),
                        concurrency=sdk.Concurrency(limit=LIMIT))
async def limited(ctx: sdk.Context) -> str:
    return str(await _step(ctx, "limited", "work", "done", 0.1))
