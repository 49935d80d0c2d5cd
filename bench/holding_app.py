"""The app of the holding benchmark: runs that park at once and stay parked.

``nap`` sleeps until the due time in its event (a day ahead in the benchmark);
``await`` waits up to a day for a ``bench/hold.resume`` event with the same
``data.key``. Its worker is started as ``python -m engine worker
bench.holding_app:client``.
"""

from __future__ import annotations

from typing import Any

import sdk
from bench.timer_app import at_ms, woke

APP_ID = "bench-hold"
NAP_FN, NAP_EVENT = "nap", "bench/hold.nap"
WAIT_FN, WAIT_EVENT, RESUME_EVENT = "await", "bench/hold.wait", "bench/hold.resume"

client = sdk.Client(APP_ID)


@client.create_function(fn_id=NAP_FN, trigger=sdk.TriggerEvent(event=NAP_EVENT), retries=0)
async def nap(ctx: sdk.Context) -> dict[str, Any]:
    due = int(ctx.event.data["due_ms"])
    await ctx.step.sleep_until("nap", at_ms(due))
    return {"woke_ms": await ctx.step.run("woke", woke)}


@client.create_function(fn_id=WAIT_FN, trigger=sdk.TriggerEvent(event=WAIT_EVENT), retries=0)
async def await_event(ctx: sdk.Context) -> dict[str, Any]:
    got = await ctx.step.wait_for_event("resume", event=RESUME_EVENT, timeout="1d",
                                        match="data.key")
    return {"resumed": got is not None}
