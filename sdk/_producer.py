"""A durable producer whose deliveries can be awaited from threads or asyncio."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any

import confluent_kafka

from sdk._connect import client_logging
from topics.catalog import partition_for
from topics.producer_stats import ProducerStats
from topics.settings import Settings

log = logging.getLogger("stepstream.producer")
stats_log = logging.getLogger("stepstream.stats")

# How long a blocked sender waits for the local queue to drain before trying again.
_QUEUE_FULL_WAIT_S = 0.005


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a record."""


class Producer:
    """One idempotent, acks=all producer.

    A daemon thread polls it, so delivery callbacks run without the callers doing
    anything; each record gets a :class:`concurrent.futures.Future` resolved on
    delivery, which threads wait on and asyncio awaits.
    """

    def __init__(self, settings: Settings, *, client_id: str = "stepstream-sdk") -> None:
        if not settings.brokers:
            raise ValueError("settings.brokers is not set")
        self.settings = settings
        if settings.producer_stats_ms > 0:
            # Asked for explicitly (STEPSTREAM_PRODUCER_STATS_MS): shown at any log level.
            stats_log.setLevel(logging.INFO)
        self._stats = ProducerStats(client_id, settings.producer_stats_ms, stats_log.info)
        self._producer = confluent_kafka.Producer(settings.client_config({
            "client.id": client_id,
            **settings.producer_tuning(),
            **client_logging(),
            **self._stats.config(),
        }))
        self._closed = threading.Event()
        # Deliveries awaited by asyncio callers, resolved on their loops in batches: one
        # cross-thread wake-up per poll round rather than one per record.
        self._delivered: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None],
                                    DeliveryError | None]] = []
        self._delivered_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name=f"{client_id}-deliveries",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)
            self._hand_back()

    def _hand_back(self) -> None:
        """Resolve the asyncio deliveries the last poll served, one batch per loop."""
        if not self._delivered:
            return
        with self._delivered_lock:
            batch, self._delivered = self._delivered, []
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for loop, future, error in batch:
            by_loop.setdefault(loop, []).append((future, error))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:  # that loop is closed: nobody awaits these any more
                pass

    def produce_nowait(self, topic: str, key: str | bytes | None, value: bytes | None,
                       partition: int | None = None) -> concurrent.futures.Future[None]:
        """Queue one record; the future resolves when it is acknowledged.

        ``partition`` defaults to :func:`~topics.catalog.partition_for` of the key.
        Raises ``BufferError`` when the local queue is full. A ``None`` value is a
        tombstone (on a compacted topic it removes the key).
        """
        if partition is None:
            partition = partition_for(key or b"", self.settings.partitions)
        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def delivered(err: Any, msg: Any) -> None:
            if future.done():
                return
            if err is not None:
                future.set_exception(DeliveryError(f"{topic}[{partition}]: {err}"))
            else:
                future.set_result(None)

        self._producer.produce(topic, value=value, key=key, partition=partition,
                               on_delivery=delivered)
        return future

    def produce(self, topic: str, key: str | bytes | None, value: bytes | None,
                partition: int | None = None) -> concurrent.futures.Future[None]:
        """Like :meth:`produce_nowait`, but waits (blocking) while the queue is full."""
        while True:
            try:
                return self.produce_nowait(topic, key, value, partition)
            except BufferError:
                self._producer.poll(_QUEUE_FULL_WAIT_S)
                self._hand_back()

    async def send(self, topic: str, key: str | bytes | None, value: bytes | None,
                   partition: int | None = None) -> None:
        """Produce one record and wait until it is acknowledged; raises DeliveryError."""
        if partition is None:
            partition = partition_for(key or b"", self.settings.partitions)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def delivered(err: Any, msg: Any) -> None:
            error = None if err is None else DeliveryError(f"{topic}[{partition}]: {err}")
            with self._delivered_lock:
                self._delivered.append((loop, future, error))

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, partition=partition,
                                       on_delivery=delivered)
                break
            except BufferError:
                await asyncio.sleep(_QUEUE_FULL_WAIT_S)
        await future

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for queued records; return how many are still undelivered."""
        left = int(self._producer.flush(timeout))
        self._hand_back()
        return left

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (up to ``timeout``) and stop the delivery thread."""
        if self._closed.is_set():
            return
        left = self.flush(timeout)
        if left:
            log.warning("producer closed with %d undelivered record(s)", left)
        self._closed.set()
        self._thread.join()
        self._stats.close(self._producer.poll)


def _resolve(items: list[tuple[asyncio.Future[None], DeliveryError | None]]) -> None:
    """On the awaiting loop: settle each delivery's future (cancelled ones are skipped)."""
    for future, error in items:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
