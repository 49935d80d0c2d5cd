"""The app of the batching benchmark (:mod:`bench.batch`): one function of one light
step two ways, each on an event of its own, so that one worker serves both variants.

- ``batched``: ``batch_events=Batch(max_size=100, timeout="1s")``, one run per batch;
- ``plain``: the same function without batching, one run per event (the peer).

Its worker is ``python -m engine worker bench.batch_app:client`` (settings from
``STEPSTREAM_*``).
"""

from __future__ import annotations

from collections.abc import Callable

import sdk
from topics.ids import run_id_for

APP_ID = "bench-batch"
MAX_SIZE = 100
TIMEOUT = "1s"
VARIANTS = ("batched", "plain")
EVENTS = {"batched": "bench/batch.batched", "plain": "bench/batch.plain"}

client = sdk.Client(APP_ID)


async def _size(n: int) -> int:
    return n


async def count(ctx: sdk.Context) -> int:
    # Nothing heavy (async: no thread per step): what is measured is how the engine
    # gathers events into runs.
    return await ctx.step.run("count", _size, len(ctx.events))


client.create_function(fn_id="plain", trigger=sdk.TriggerEvent(event=EVENTS["plain"]))(count)
client.create_function(fn_id="batched", trigger=sdk.TriggerEvent(event=EVENTS["batched"]),
                       batch_events=sdk.Batch(max_size=MAX_SIZE, timeout=TIMEOUT))(count)


def event_maker(variant: str) -> Callable[[str, int, int], sdk.Event]:
    """``(tag, i, ts_ms) -> sdk.Event`` for a variant (what :mod:`bench.runs` sends)."""
    name = EVENTS[variant]

    def make(tag: str, i: int, ts_ms: int) -> sdk.Event:
        return sdk.Event(name=name, id=f"{tag}-{i:07d}", ts=ts_ms, data={"i": i})
    return make


def plain_run_id(event_id: str, ts: int) -> str:
    """The run an event of ``plain`` starts (the warm-up waits for it)."""
    return run_id_for(f"{APP_ID}-plain", event_id, ts)
