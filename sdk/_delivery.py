"""What the worker produces, delivered: reports retried until acknowledged, the events
of ``send_event`` steps, and dead letters for tasks it cannot read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sdk import _outcomes
from sdk._durations import wall_ms
from sdk._execution import ExecutionResult
from sdk._producer import DeliveryError, Producer
from topics import records
from topics.catalog import Catalog, event_partition, partition_for
from topics.codec import encode
from topics.settings import Settings

log = logging.getLogger("stepstream.worker")

MAX_REPORT_BACKOFF_S = 5.0


class Delivery:
    """The worker's sends; ``stopping()`` tells a retry loop to give up."""

    def __init__(self, producer: Producer, settings: Settings, catalog: Catalog,
                 worker_id: str, stopping: Callable[[], bool]) -> None:
        self._producer = producer
        self._settings = settings
        self._catalog = catalog
        self._worker_id = worker_id
        self._stopping = stopping

    async def until_delivered(self, topic: str, key: str | bytes | None, value: bytes,
                              what: str) -> bool:
        """Produce until acknowledged; False if the worker is stopping first."""
        partition = partition_for(key or b"", self._settings.partitions)
        backoff = 0.1
        while True:
            try:
                await self._producer.send(topic, key, value, partition)
                return True
            except DeliveryError as exc:
                if self._stopping():
                    log.error("worker %s: %s not delivered, left for another worker: %s",
                              self._worker_id, what, exc)
                    return False
                log.warning("worker %s: %s not delivered, retrying: %s", self._worker_id,
                            what, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_REPORT_BACKOFF_S)

    async def step_events(self, result: ExecutionResult) -> ExecutionResult:
        """Deliver send_event steps' events; a step whose events failed is failed."""
        if not result.sends:
            return result
        topic = self._catalog.events
        n = self._settings.partitions
        failed: dict[str, str] = {}

        async def deliver(step_id: str, events: list[records.Event]) -> None:
            try:
                await asyncio.gather(*(
                    self._producer.send(topic, e.id, encode(e), event_partition(e.name, n))
                    for e in events
                ))
            except DeliveryError as exc:
                failed[step_id] = str(exc)

        await asyncio.gather(*(deliver(s, evs) for s, evs in result.sends.items()))
        if not failed:
            return result
        now = wall_ms()
        replaced = []
        for o in result.outcomes:
            if o.step_id in failed:
                o = records.Outcome(
                    op=records.STEP_FAILED, step_id=o.step_id, name=o.name, retriable=True,
                    error=_outcomes.error_named(
                        "SendError", f"step {o.step_id!r}: events not acknowledged: "
                                     f"{failed[o.step_id]}"),
                    started_at=o.started_at, ended_at=now,
                )
            replaced.append(o)
        return ExecutionResult(replaced, {})

    async def dead_letter(self, msg: Any, reason: str) -> bool:
        """Send a task record that cannot run to the ``dlq`` topic with ``reason``;
        False if the worker stopped before it was acknowledged."""
        letter = records.bounded_dead_letter(
            source_topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
            key=msg.key(), value=msg.value(), reason=reason, ts=wall_ms(),
            max_record_bytes=self._settings.max_record_bytes,
            extra={"worker": self._worker_id},
        )
        return await self.until_delivered(self._catalog.dlq, msg.key(), encode(letter),
                                          "dead letter")
