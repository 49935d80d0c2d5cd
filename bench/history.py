"""A realistic ``runs`` history: 3-step runs as the engine and workers write them."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Producer

from topics.catalog import partition_for
from topics.codec import encode
from topics.ids import new_ulid, run_id_for
from topics.records import (
    FUNCTION_COMPLETED,
    STEP_COMPLETED,
    Outcome,
    OutcomesReported,
    Record,
    RunRequested,
)
from topics.settings import Settings

APP_ID = "bench"
FN_ID = "bench-three-steps"
STEPS = ("validate", "charge", "ship")
RECORDS_PER_RUN = 1 + len(STEPS) + 1


def _event(i: int, ts: int) -> dict:
    return {"name": "bench/order.placed", "id": new_ulid(ts), "ts": ts,
            "data": {"order_id": f"ord-{i:08d}", "customer": f"cus-{i % 997:05d}",
                     "total": 1999 + i % 500, "currency": "EUR",
                     "items": [{"sku": f"sku-{i % 31}", "qty": 1 + i % 3}]}}


def _run_records(i: int, ts: int) -> list[Record]:
    event = _event(i, ts)
    run_id = run_id_for(FN_ID, event["id"], ts)
    # As the router writes it: the event-id dedupe key is also the partition key.
    dedupe = f"{FN_ID}\x1fevent\x1f{event['id']}"
    out: list[Record] = [RunRequested(
        run_id=run_id, fn_id=FN_ID, app_id=APP_ID, partition_key=dedupe, event=event,
        events=[event], retries=4, backoff_base_ms=1000, ts=ts + 1, dedupe_key=dedupe)]
    at = ts + 2
    for seq, step in enumerate(STEPS, start=1):
        out.append(OutcomesReported(
            run_id=run_id, task_seq=seq, worker="bench-worker-1", ts=at + 2,
            outcomes=[Outcome(op=STEP_COMPLETED, step_id=step, name=step,
                              output={"step": step, "ok": True, "order_id": f"ord-{i:08d}"},
                              started_at=at, ended_at=at + 1)]))
        at += 3
    out.append(OutcomesReported(
        run_id=run_id, task_seq=len(STEPS) + 1, worker="bench-worker-1", ts=at,
        outcomes=[Outcome(op=FUNCTION_COMPLETED, output={"shipped": True})]))
    return out


def history(runs: int, window: int = 1000) -> Iterator[tuple[str, bytes]]:
    """``(partition key, encoded record)`` for ``runs`` runs, ``window`` runs in flight at a
    time: each run's records in order, interleaved with the other runs of its window, as
    a busy engine sees them."""
    base = int(time.time() * 1000) - 3_600_000
    for start in range(0, runs, window):
        chunk = [_run_records(i, base + i) for i in range(start, min(runs, start + window))]
        for phase in range(RECORDS_PER_RUN):
            for recs in chunk:
                rec = recs[phase]
                yield rec.run_id, encode(rec)  # type: ignore[union-attr]


def produce_history(settings: Settings, topic: str, runs: int) -> tuple[int, int]:
    """Produce the history to ``topic``; return (records, bytes)."""
    producer = Producer({"bootstrap.servers": settings.brokers, **settings.producer_tuning(),
                         "linger.ms": 20, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 500_000})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    n = size = 0
    for key, value in history(runs):
        while True:
            try:
                producer.produce(topic, value, key,
                                 partition=partition_for(key, settings.partitions),
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        size += len(value)
        if n % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failures:
        raise RuntimeError(f"could not produce the history: {left} left, {failures[:3]}")
    return n, size
