"""Peer of the run benchmarks: the same 3-step pipeline written directly in Faust.

One agent per step; each step's result is forwarded on a topic of its own
(``events -> s1 -> s2 -> done``); no durability of step outcomes beyond Kafka and no
run state. Input is the same ``topics.codec`` Event records the SDK sends; the last
agent writes ``{"id": event id, "output": ...}`` (msgpack) to ``done``, which the
benchmark observes. Run as a child process: ``python -m bench.faust_pipeline``
(arguments from BENCH_FAUST_* variables).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack

from bench.faust_common import make_app, run_worker
from bench.pipeline_app import charge, ship, validate
from topics.codec import decode
from topics.records import Event

PREFIX = os.environ["BENCH_FAUST_PREFIX"]
PARTITIONS = int(os.environ["BENCH_FAUST_PARTITIONS"])

app = make_app(PREFIX + "faust-pipeline", os.environ["BENCH_FAUST_BROKER"],
               Path(os.environ["BENCH_FAUST_DATADIR"]), PARTITIONS,
               int(os.environ.get("BENCH_FAUST_FETCH_WAIT_MS", "5")), store="memory://")


def _topic(name: str) -> Any:
    return app.topic(PREFIX + name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=PARTITIONS)


events, s1, s2, done = _topic("events"), _topic("s1"), _topic("s2"), _topic("done")


def _pack(value: dict[str, Any]) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(raw: bytes) -> dict[str, Any]:
    return msgpack.unpackb(raw, raw=False)


@app.agent(events)
async def step_validate(stream: Any) -> None:
    async for key, value in stream.items():
        event = decode(value, expect=(Event,))
        assert isinstance(event, Event)
        out = await validate(event.data)
        await s1.send(key=key, value=_pack({"id": event.id, "data": event.data, "out": out}))


@app.agent(s1)
async def step_charge(stream: Any) -> None:
    async for key, value in stream.items():
        msg = _unpack(value)
        out = await charge(msg["out"])
        await s2.send(key=key, value=_pack({"id": msg["id"], "out": out}))


@app.agent(s2)
async def step_ship(stream: Any) -> None:
    async for key, value in stream.items():
        msg = _unpack(value)
        out = await ship(msg["out"])
        await done.send(key=key, value=_pack({"id": msg["id"], "output": out}))


if __name__ == "__main__":
    run_worker(app)
