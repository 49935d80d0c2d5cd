"""An app for the batching and debounce tests: each function returns the ids of the
events its run got, in ``ctx.events`` order, and the id of ``ctx.event``."""

from __future__ import annotations

from typing import Any

import sdk

client = sdk.Client(app_id="batching")


def _ids(ctx: sdk.Context) -> dict[str, Any]:
    return {"event": ctx.event.id, "events": [e.id for e in ctx.events]}


@client.create_function(fn_id="by-size", trigger=sdk.TriggerEvent(event="batch/by-size"),
                        batch_events=sdk.Batch(max_size=5, timeout="30s"))
async def by_size(ctx: sdk.Context) -> dict[str, Any]:
    return _ids(ctx)


@client.create_function(fn_id="by-time", trigger=sdk.TriggerEvent(event="batch/by-time"),
                        batch_events=sdk.Batch(max_size=100, timeout="1s"))
async def by_time(ctx: sdk.Context) -> dict[str, Any]:
    return _ids(ctx)


@client.create_function(fn_id="keyed", trigger=sdk.TriggerEvent(event="batch/keyed"),
                        batch_events=sdk.Batch(max_size=3, timeout="30s", key="event.data.k",
                                               if_exp="event.data.k != 'solo'"))
async def keyed(ctx: sdk.Context) -> dict[str, Any]:
    return _ids(ctx)


@client.create_function(fn_id="by-bytes", trigger=sdk.TriggerEvent(event="batch/by-bytes"),
                        batch_events=sdk.Batch(max_size=100, timeout="30s"))
async def by_bytes(ctx: sdk.Context) -> dict[str, Any]:
    return _ids(ctx)


@client.create_function(fn_id="crash", trigger=sdk.TriggerEvent(event="batch/crash"),
                        batch_events=sdk.Batch(max_size=7, timeout="2s"))
async def crash(ctx: sdk.Context) -> dict[str, Any]:
    return _ids(ctx)


@client.create_function(fn_id="quiet", trigger=sdk.TriggerEvent(event="debounce/quiet"),
                        debounce=sdk.Debounce(period="2s", timeout="4s"))
async def quiet(ctx: sdk.Context) -> dict[str, Any]:
    return _ids(ctx)


@client.create_function(fn_id="collect", trigger=sdk.TriggerEvent(event="debounce/collect"),
                        debounce=sdk.Debounce(period="1s", key="event.data.k", collect=True))
async def collect(ctx: sdk.Context) -> dict[str, Any]:
    return _ids(ctx)
