"""Event ingest: validate events sent by users and append them to the ``events`` topic;
also the API's way to put a command on the ``runs`` topic (:meth:`EventIngest.request_cancel`).

A batch is validated as a whole before anything is produced, and :meth:`EventIngest.send`
returns only when the broker acknowledged every event (acks=all, idempotent producer), so
an acknowledged event is never lost. If delivery fails part-way some events of the batch
may be stored; the sender retries with the same ids and the router starts at most one run
per event id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from engine.api.event_body import (
    MAX_EVENTS_PER_REQUEST,
    BodyError,
    Seed,
    load_json,
    parse_seed,
    seeded_event_id,
)
from engine.children import die_with_parent
from engine.clock import now_ms
from engine.events import IngestError, prepare_event
from topics.catalog import Catalog, event_partition, partition_for
from topics.codec import encode
from topics.records import CancellationCreated, CancelRequested, Event, Record
from topics.settings import Settings

log = logging.getLogger(__name__)

# Bodies up to this size are decoded on the event loop (well under a millisecond of
# work); larger ones in the ingest's worker process, so one big request cannot stall
# every other request (the C JSON decoder holds the GIL for the whole body).
INLINE_BODY_BYTES = 64 * 1024


def prepare_batch(raw: Sequence[Any], settings: Settings, *, now: int,
                  seed: Seed | None = None) -> list[tuple[Event, bytes]]:
    """Validate and encode a batch of raw events (all or nothing); raises
    :class:`IngestError` on the first bad one."""
    out = []
    for i, item in enumerate(raw):
        default_id = None if seed is None else partial(seeded_event_id, seed, i)
        out.append(prepare_event(item, settings, now=now, index=i, default_id=default_id))
    return out


# An event ready to produce: its id (the record's key), its encoded record, its name
# (which picks its partition: topics.catalog.event_partition).
Stored = tuple[str, bytes, str]


def prepare_body(body: bytes, settings: Settings, now: int,
                 seed: str | None = None) -> list[Stored]:
    """Decode a ``POST /e/{key}`` body and prepare its events: ``(id, encoded, name)``.
    ``seed`` is the raw ``x-inngest-event-id-seed`` header. Pure, and its result is
    small to pickle, so it can run in a worker process. Raises :class:`IngestError`."""
    try:
        payload = load_json(body)
    except BodyError as exc:
        raise IngestError(str(exc)) from None
    if isinstance(payload, dict):
        events: list[Any] = [payload]
    elif isinstance(payload, list):
        events = payload
    else:
        raise IngestError("body must be a JSON object (one event) or a list of events")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise IngestError(f"{len(events)} events in one request, over the limit of "
                          f"{MAX_EVENTS_PER_REQUEST}; send them in several requests", 413)
    batch = prepare_batch(events, settings, now=now, seed=parse_seed(seed))
    return [(event.id, value, event.name) for event, value in batch]


def _init_worker() -> None:
    # The worker shares the terminal's process group: Ctrl-C is for the parent, which
    # shuts the pool down in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed without cleanup (SIGKILL) must not leave the worker behind: have
    # Linux kill it then, and exit now if that already happened.
    arm = die_with_parent(signal.SIGKILL)
    if arm is not None:
        arm()
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(0)
    # Decoding a big body is bulk work: on a busy machine the API's event loop and the
    # engine (the parent) get the CPU first, so /health stays fast meanwhile.
    os.nice(10)


def all_done(futures: Sequence[concurrent.futures.Future[Any]]) -> asyncio.Future[None]:
    """An asyncio future done once every one of ``futures`` is: one callback on the loop
    per batch (wrapping each future would put thousands on it when a big batch's
    acknowledgements arrive together)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    left = [len(futures)]
    lock = threading.Lock()

    def settle() -> None:
        if not done.done():
            done.set_result(None)

    def one_done(_: concurrent.futures.Future[Any]) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle)

    if not futures:
        settle()
    for fut in futures:
        fut.add_done_callback(one_done)
    return done


class EventIngest:
    """Produces validated events to the ``events`` topic: key and partition from the
    event id, producer settings from :meth:`Settings.producer_tuning`.

    The producer is created on first use; a background thread serves its delivery
    callbacks. ``delivery_timeout`` bounds how long a send waits for the broker.
    """

    def __init__(self, settings: Settings, *, delivery_timeout: float = 30.0) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.topic = self.catalog.events
        self.delivery_timeout = delivery_timeout
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Create the producer now rather than on the first send: an idempotent producer
        needs a round of broker requests (about a second on Tansu) before its first
        delivery, which would otherwise land on the first sender. Likewise start the
        worker process for large bodies: spawning it copies this process's page tables,
        which would stall the event loop in the middle of the first big request."""
        self._ensure_producer()
        self._ensure_pool().submit(int).result()

    def prepare(self, raw: Sequence[Any], now: int | None = None) -> list[tuple[Event, bytes]]:
        """Validate a whole batch and encode it; raises :class:`IngestError` on the first
        bad event, so nothing of a bad batch is ever produced."""
        return prepare_batch(raw, self.settings, now=now_ms() if now is None else now)

    async def send(self, raw: Sequence[Any]) -> list[str]:
        """Validate and store a batch of raw JSON events; return their ids once every one
        is acknowledged by the broker. Raises :class:`IngestError`."""
        return await self._store([(e.id, v, e.name) for e, v in self.prepare(raw)])

    async def send_body(self, body: bytes, seed: str | None = None) -> list[str]:
        """Store the events of a ``POST /e/{key}`` body (one event object or a list of
        at most :data:`MAX_EVENTS_PER_REQUEST`); ``seed`` is the request's
        ``x-inngest-event-id-seed`` header. Returns their ids once every one is
        acknowledged. Raises :class:`IngestError`.

        A large body is decoded, validated and encoded in a worker process and produced
        from a thread, so the event loop stays free for other requests meanwhile.
        """
        now = now_ms()
        if len(body) <= INLINE_BODY_BYTES:
            return await self._store(prepare_body(body, self.settings, now=now, seed=seed))
        loop = asyncio.get_running_loop()
        pool = self._ensure_pool()
        try:
            batch = await loop.run_in_executor(pool, prepare_body, body, self.settings, now,
                                               seed)
        except BrokenProcessPool:
            # The worker died (killed, out of memory): the next request gets a new one.
            # Only this pool is dropped: another request may have replaced it already.
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False)
            raise IngestError("event decoding failed (worker process lost); retry", 503
                              ) from None
        return await self._store(batch)

    async def _store(self, batch: list[Stored]) -> list[str]:
        if not batch:
            return []
        # Producing thousands of records is milliseconds of work per thousand, and a
        # full local queue waits: both belong off the event loop.
        futures = await asyncio.to_thread(self._produce, batch)
        # Not waited for on an API thread: that held one for each request's round trip
        # to the broker (up to the delivery timeout), and queries queued behind it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done(futures), self.delivery_timeout + 5)
        return self._results(batch, futures)

    def send_sync(self, raw: Sequence[Any]) -> list[str]:
        """Blocking :meth:`send`, for scripts and the CLI."""
        batch = [(e.id, v, e.name) for e, v in self.prepare(raw)]
        if not batch:
            return []
        futures = self._produce(batch)
        concurrent.futures.wait(futures, timeout=self.delivery_timeout + 5)
        return self._results(batch, futures)

    async def send_record(self, topic: str, key: str, record: Record,
                          partition: int | None = None) -> None:
        """Produce one engine record (not a user event) to ``topic`` on the partition of
        ``key`` (:func:`topics.catalog.partition_for`) unless ``partition`` is given, and
        return once the broker has acknowledged it. Raises :class:`IngestError` (503) if
        it was not stored."""
        value = encode(record)
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._produce_one(self._ensure_producer(), key.encode(), value, fut, topic=topic,
                          partition=partition)
        await asyncio.wait([asyncio.wrap_future(fut)], timeout=self.delivery_timeout + 5)
        what = f"{record.KIND} for {getattr(record, 'run_id', key)}"
        if not fut.done():
            raise IngestError(f"{what}: no acknowledgement from the broker in time", 503)
        exc = fut.exception()
        if exc is not None:
            raise IngestError(f"{what} was not stored: {exc}", 503)

    async def request_cancel(self, run_id: str, partition_key: str,
                             reason: str | None = None) -> CancelRequested:
        """Ask the engine to cancel a run: a ``run.cancel`` record on the ``runs`` topic,
        keyed by the run's partition key so it lands on the run's own partition and is
        folded in order with the run's other records. Returns once it is stored."""
        record = CancelRequested(run_id=run_id, by={"kind": "api", "reason": reason or None},
                                 ts=now_ms())
        await self.send_record(self.catalog.runs, partition_key, record)
        return record

    async def record_cancellation(self, rec: CancellationCreated) -> None:
        """Keep a bulk cancellation on the compacted ``cancellations`` topic (one
        partition: one order), once the broker has stored it."""
        await self.send_record(self.catalog.cancellations, rec.id, rec, partition=0)

    async def remove_function(self, fn_id: str) -> None:
        """Remove a function from the registry: a tombstone (key = function id, no value)
        on the compacted ``functions`` topic, which every engine's registry reader
        applies. Returns once the broker has stored it; raises :class:`IngestError`
        (503) if it was not."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                fut.set_exception(KafkaException(err))
            else:
                fut.set_result(None)

        # The registry topic has one partition, so all definitions stay in one order.
        self._ensure_producer().produce(self.catalog.functions, value=None,
                                        key=fn_id.encode(), partition=0,
                                        on_delivery=delivered)
        await asyncio.wait([asyncio.wrap_future(fut)], timeout=self.delivery_timeout + 5)
        if not fut.done() or fut.exception() is not None:
            raise IngestError(f"removal of function {fn_id} was not stored: "
                              f"{fut.exception() if fut.done() else 'no acknowledgement'}",
                              503)

    def _results(self, batch: list[Stored],
                 futures: list[concurrent.futures.Future[None]]) -> list[str]:
        for (event_id, *_), fut in zip(batch, futures, strict=True):
            if not fut.done():
                raise IngestError(f"event {event_id}: no acknowledgement from the broker "
                                  f"in time", 503)
            exc = fut.exception()
            if exc is not None:
                raise IngestError(f"event {event_id} was not stored: {exc}", 503)
        return [event_id for event_id, *_ in batch]

    def _produce(self, batch: list[Stored]) -> list[concurrent.futures.Future[None]]:
        producer = self._ensure_producer()
        futures: list[concurrent.futures.Future[None]] = []
        for event_id, value, name in batch:
            fut: concurrent.futures.Future[None] = concurrent.futures.Future()
            futures.append(fut)
            self._produce_one(producer, event_id.encode(), value, fut,
                              partition=event_partition(name, self.settings.partitions))
        return futures

    def _produce_one(self, producer: Producer, key: bytes, value: bytes,
                     fut: concurrent.futures.Future[None], *, topic: str | None = None,
                     partition: int | None = None) -> None:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                fut.set_exception(KafkaException(err))
            else:
                fut.set_result(None)

        deadline = time.monotonic() + self.delivery_timeout
        while True:
            try:
                producer.produce(topic or self.topic, value=value, key=key,
                                 partition=(partition_for(key, self.settings.partitions)
                                            if partition is None else partition),
                                 on_delivery=delivered)
                return
            except BufferError:
                # The local queue is full: the poller thread drains it as deliveries
                # complete, so wait briefly instead of failing the batch.
                if time.monotonic() > deadline:
                    fut.set_exception(KafkaException(KafkaError(KafkaError._QUEUE_FULL)))
                    return
                time.sleep(0.005)
            except KafkaException as exc:
                fut.set_exception(exc)
                return

    def _ensure_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._closing.is_set():
                raise IngestError("event ingest is closed", 503)
            if self._pool is None:
                # spawn, not fork: this process runs librdkafka threads, which a forked
                # child would inherit in an undefined state.
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker)
            return self._pool

    def _ensure_producer(self) -> Producer:
        with self._lock:
            if self._closing.is_set():
                raise IngestError("event ingest is closed", 503)
            if self._producer is None:
                if not self.settings.brokers:
                    raise IngestError("no brokers configured (set STEPSTREAM_BROKERS)", 503)
                conf = self.settings.client_config({
                    **self.settings.producer_tuning(),
                    "message.timeout.ms": int(self.delivery_timeout * 1000)})
                self._producer = Producer(conf)
                self._poller = threading.Thread(target=self._poll_loop, args=(self._producer,),
                                                name="stepstream-ingest-poll", daemon=True)
                self._poller.start()
            return self._producer

    def _poll_loop(self, producer: Producer) -> None:
        while not self._closing.is_set():
            producer.poll(0.1)

    def close(self, timeout: float = 10.0) -> None:
        """Flush outstanding events (up to ``timeout`` seconds) and stop the producer."""
        with self._lock:
            self._closing.set()
            producer, self._producer = self._producer, None
            poller, self._poller = self._poller, None
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if poller is not None:
            poller.join()
        if producer is not None:
            remaining = producer.flush(timeout)
            if remaining:
                log.warning("%d event(s) not delivered when ingest closed", remaining)
