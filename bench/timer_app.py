"""The app of the timer benchmark: each run sleeps until a due time taken from its event,
then runs one step, ``woke``, that returns when it ran.

Its worker is started as ``python -m engine worker bench.timer_app:client``. ``woke``
and :func:`at_ms` are shared with the Faust peer (:mod:`bench.faust_timers`) and the
holding benchmark's app (:mod:`bench.holding_app`).
"""

from __future__ import annotations

import datetime
from typing import Any

import sdk
from bench.common import now_ms

APP_ID = "bench-timers"
FN_ID = "nap"
EVENT = "bench/nap"
WOKE_STEP = "woke"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

client = sdk.Client(APP_ID)


def at_ms(ms: int) -> datetime.datetime:
    """The UTC datetime of epoch milliseconds ``ms``, exactly."""
    return _EPOCH + datetime.timedelta(milliseconds=ms)


async def woke() -> int:
    """The step after the sleep: when it ran, on the worker's clock."""
    return now_ms()


@client.create_function(fn_id=FN_ID, trigger=sdk.TriggerEvent(event=EVENT), retries=0)
async def nap(ctx: sdk.Context) -> dict[str, Any]:
    due = int(ctx.event.data["due_ms"])
    await ctx.step.sleep_until("nap", at_ms(due))
    return {"due_ms": due, "woke_ms": await ctx.step.run(WOKE_STEP, woke)}


def nap_event(tag: str, i: int, due_ms: int, ts_ms: int) -> sdk.Event:
    return sdk.Event(name=EVENT, id=f"{tag}-{i:07d}", ts=ts_ms, data={"due_ms": due_ms})
