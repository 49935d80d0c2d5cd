"""Peer of the run benchmarks: the same 3 steps as a DBOS durable workflow.

DBOS (dbos-transact) with its default system database, SQLite, in the peer's work
folder: ``@DBOS.workflow`` calls three ``@DBOS.step`` functions (the handlers of
:mod:`bench.pipeline_app`); DBOS checkpoints each step's output and the workflow's
status in SQLite, so a step completed before a crash is not run again, as in stepstream.

The workload arrives and is observed as for the other peers: the same ``topics.codec``
Event records on ``{prefix}events`` (a plain consumer in this process, no consumer group
commits; each event starts one workflow whose id is the event id, so a re-delivered event
does not run twice), and ``{"id": event id, "output": ...}`` (msgpack) on ``{prefix}done``
once the workflow has completed. At most BENCH_DBOS_CONCURRENCY workflows run at once
(bench/runs.py: DBOS_CONCURRENCY, the fastest here). Run as a child process: ``python -m
bench.dbos_peer`` (arguments from BENCH_DBOS_* variables); it never contacts anything
but the broker (no DBOS Conductor key, no OTLP).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import msgpack
from confluent_kafka import Consumer, Producer, TopicPartition
from dbos import DBOS, DBOSConfig, SetWorkflowID

from bench.pipeline_app import charge, ship, validate
from topics.codec import DecodeError, decode
from topics.records import Event

log = logging.getLogger("bench.dbos_peer")


@DBOS.step()
async def validate_step(data: dict[str, Any]) -> dict[str, Any]:
    return await validate(data)


@DBOS.step()
async def charge_step(order: dict[str, Any]) -> dict[str, Any]:
    return await charge(order)


@DBOS.step()
async def ship_step(order: dict[str, Any]) -> dict[str, Any]:
    return await ship(order)


@DBOS.workflow()
async def three_steps(data: dict[str, Any]) -> dict[str, Any]:
    order = await validate_step(data)
    paid = await charge_step(order)
    return await ship_step(paid)


def _events(broker: str, topic: str, partitions: int, fetch_wait_ms: int,
            loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event | None],
            stop: threading.Event) -> None:
    """Consumer thread: decode events and hand them to the event loop."""
    c = Consumer({"bootstrap.servers": broker, "group.id": "dbos-peer",
                  "enable.auto.commit": False, "fetch.wait.max.ms": fetch_wait_ms})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    try:
        while not stop.is_set():
            for m in c.consume(1000, 0.1):
                if m.error() is not None or m.value() is None:
                    continue
                try:
                    event = decode(m.value() or b"", expect=(Event,))
                except DecodeError:
                    continue
                assert isinstance(event, Event)
                loop.call_soon_threadsafe(queue.put_nowait, event)
    finally:
        c.close()
        loop.call_soon_threadsafe(queue.put_nowait, None)


async def serve(broker: str, prefix: str, partitions: int, fetch_wait_ms: int,
                concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    producer = Producer({"bootstrap.servers": broker, "acks": "all", "linger.ms": 1})
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def run_one(event: Event) -> None:
        try:
            with SetWorkflowID(event.id):
                handle = await DBOS.start_workflow_async(three_steps, event.data)
            output = await handle.get_result()
            producer.produce(prefix + "done", msgpack.packb(
                {"id": event.id, "output": output}, use_bin_type=True), event.id.encode())
            producer.poll(0)
        except Exception:
            log.exception("workflow %s failed", event.id)
        finally:
            slots.release()

    consumer = threading.Thread(target=_events, daemon=True, args=(
        broker, prefix + "events", partitions, fetch_wait_ms, loop, queue, stop))
    consumer.start()
    while (event := await queue.get()) is not None and not stop.is_set():
        await slots.acquire()
        task = asyncio.create_task(run_one(event))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)
    producer.flush(10)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    datadir = Path(os.environ["BENCH_DBOS_DATADIR"])
    datadir.mkdir(parents=True, exist_ok=True)
    config: DBOSConfig = {
        "name": "stepstream-bench",
        "system_database_url": f"sqlite:///{datadir / 'dbos.sqlite'}",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        asyncio.run(serve(os.environ["BENCH_DBOS_BROKER"], os.environ["BENCH_DBOS_PREFIX"],
                          int(os.environ["BENCH_DBOS_PARTITIONS"]),
                          int(os.environ.get("BENCH_DBOS_FETCH_WAIT_MS", "10")),
                          int(os.environ.get("BENCH_DBOS_CONCURRENCY", "100"))))
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
