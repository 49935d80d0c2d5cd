"""The app of the run benchmarks: one function of three trivial steps.

Its worker is started as ``python -m engine worker bench.pipeline_app:client``; the
client takes its settings (brokers, prefix, partitions) from ``STEPSTREAM_*``.
The step handlers are shared with the Faust peer (:mod:`bench.faust_pipeline`).
"""

from __future__ import annotations

from typing import Any

import sdk
from topics.ids import run_id_for

APP_ID = "bench"
FN_ID = "three-steps"
EVENT = "bench/order.placed"

client = sdk.Client(APP_ID)


async def validate(data: dict[str, Any]) -> dict[str, Any]:
    return {"order_id": data.get("order_id"), "valid": True}


async def charge(order: dict[str, Any]) -> dict[str, Any]:
    return {"order_id": order.get("order_id"), "charged": 1999}


async def ship(order: dict[str, Any]) -> dict[str, Any]:
    return {"order_id": order.get("order_id"), "shipped": True}


@client.create_function(fn_id=FN_ID, trigger=sdk.TriggerEvent(event=EVENT))
async def three_steps(ctx: sdk.Context) -> dict[str, Any]:
    order = await ctx.step.run("validate", validate, ctx.event.data)
    paid = await ctx.step.run("charge", charge, order)
    return await ctx.step.run("ship", ship, paid)


def run_id(event_id: str, ts: int) -> str:
    """The id of the run an event starts (deterministic: see topics.ids.run_id_for)."""
    return run_id_for(f"{APP_ID}-{FN_ID}", event_id, ts)
