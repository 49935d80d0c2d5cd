"""The app of the flow-control benchmark (:mod:`bench.flow`): the three-step function of
:mod:`bench.pipeline_app` three ways, each on an event of its own, so that one worker
serves every variant and a variant's events reach only its function.

- ``plain``: no flow control (the peer the issue compares with);
- ``keys``: ``Concurrency(limit=10, key="event.data.k")``, fed 1,000 distinct keys;
- ``hot``: the same function, fed one key.

``keys`` and ``hot`` differ only in the events sent, so they share one function.
Its worker is ``python -m engine worker bench.flow_app:client`` (settings from
``STEPSTREAM_*``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sdk
from bench.pipeline_app import charge, ship, validate
from topics.ids import run_id_for

APP_ID = "bench-flow"
LIMIT = 10
KEY = "event.data.k"
HOT_KEY = "hot"
VARIANTS = ("plain", "keys", "hot")
FN_IDS = {"plain": "plain", "keys": "limited", "hot": "limited"}
EVENTS = {"plain": "bench/flow.plain", "keys": "bench/flow.limited",
          "hot": "bench/flow.limited"}

client = sdk.Client(APP_ID)


async def three_steps(ctx: sdk.Context) -> dict[str, Any]:
    order = await ctx.step.run("validate", validate, ctx.event.data)
    paid = await ctx.step.run("charge", charge, order)
    return await ctx.step.run("ship", ship, paid)


client.create_function(fn_id=FN_IDS["plain"],
                       trigger=sdk.TriggerEvent(event=EVENTS["plain"]))(three_steps)
client.create_function(fn_id=FN_IDS["keys"], trigger=sdk.TriggerEvent(event=EVENTS["keys"]),
                       concurrency=sdk.Concurrency(limit=LIMIT, key=KEY))(three_steps)


def key_of(variant: str, i: int, keys: int) -> str:
    """The concurrency key of the ``i``-th event of a variant: one of ``keys`` distinct
    values, round robin (``keys`` and ``plain``), or the hot key."""
    return HOT_KEY if variant == "hot" else f"k{i % keys:05d}"


def event_maker(variant: str, keys: int) -> Callable[[str, int, int], sdk.Event]:
    """``(tag, i, ts_ms) -> sdk.Event`` for a variant (what :mod:`bench.runs` sends)."""
    name = EVENTS[variant]

    def make(tag: str, i: int, ts_ms: int) -> sdk.Event:
        return sdk.Event(name=name, id=f"{tag}-{i:07d}", ts=ts_ms,
                         data={"k": key_of(variant, i, keys), "order_id": f"ord-{i:07d}",
                               "total": 1999, "currency": "EUR"})
    return make


def run_id_maker(variant: str) -> Callable[[str, int], str]:
    """``(event_id, ts) -> run id`` for a variant's function (topics.ids.run_id_for)."""
    fn = f"{APP_ID}-{FN_IDS[variant]}"
    return lambda event_id, ts: run_id_for(fn, event_id, ts)
