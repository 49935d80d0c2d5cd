"""The worker: consumes tasks, runs functions, reports outcomes.

Threads: one runs the consumer (:mod:`sdk._consumer`; every consumer call happens
there, in order), the producer has its own delivery thread, sync step handlers run in a
pool, and user functions run as tasks on the asyncio loop. This module wires them: the
loop takes records from the consumer thread, queues their tasks (:mod:`sdk._jobs`),
runs them as slots free up (:mod:`sdk._runner`) and stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import confluent_kafka

from sdk import _refs
from sdk._config import broker_source
from sdk._connect import wait_for_broker
from sdk._consumer import TaskConsumer
from sdk._delivery import Delivery
from sdk._execution import check_task
from sdk._jobs import Job, Jobs
from sdk._metrics import WorkerMetrics
from sdk._offsets import OffsetTracker
from sdk._producer import Producer
from sdk._registration import register
from sdk._runner import TaskRunner
from sdk._signals import run_with_signals
from sdk._tracing import StepTracer
from topics import records
from topics.catalog import Catalog
from topics.codec import DecodeError, decode

if TYPE_CHECKING:
    from sdk._client import Client

log = logging.getLogger("stepstream.worker")

# How long a saturated worker waits for a free slot before serving the consumer anyway.
FULL_WAIT_S = 1.0


class Worker:
    """Runs one app's functions for tasks from the ``tasks`` topic.

    ``concurrency`` bounds the tasks running at once; up to ``prefetch`` more
    (default: as many, at least 32) wait in memory for a slot. ``run()`` blocks until SIGINT or
    SIGTERM (or :meth:`stop`); ``await run_async()`` does the same inside a loop.
    On stop, running tasks get ``shutdown_timeout`` seconds to finish; the rest are
    cancelled and left uncommitted for another worker.

    ``metrics_port`` serves Prometheus metrics on ``metrics_host`` (127.0.0.1) at that
    port (0: a free one, then in ``metrics_port`` once running). ``tracer_provider``
    (an OpenTelemetry ``TracerProvider``) gets a span per step attempt; without it,
    spans go over OTLP if ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (README, "Traces").
    """

    def __init__(self, client: Client, *, concurrency: int = 100,
                 prefetch: int | None = None, shutdown_timeout: float = 30.0,
                 seq_memory: int = 100_000, metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", tracer_provider: Any = None) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.client = client
        self.concurrency = concurrency
        self.prefetch = max(concurrency, 32) if prefetch is None else max(prefetch, 1)
        self.shutdown_timeout = shutdown_timeout
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._tracker = OffsetTracker()
        self._jobs = Jobs(self._tracker, seq_memory)
        self._running: set[asyncio.Task[None]] = set()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: TaskConsumer | None = None
        self._slot_freed = asyncio.Event()
        self._refs = _refs.RefResolver(client.settings)  # reads large outputs; lazy
        # Set once the functions are registered and the worker is consuming.
        self.ready = threading.Event()
        self.metrics = WorkerMetrics(concurrency, lambda: len(self._running))
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self._tracer = StepTracer.create(tracer_provider)

    # -- public ----------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGINT/SIGTERM or :meth:`stop`; a second signal stops at once."""
        asyncio.run(run_with_signals(self.run_async, self._on_signal))

    async def run_async(self) -> None:
        """Run inside the current loop until :meth:`stop` is called."""
        self._loop = asyncio.get_running_loop()
        settings = self.client.settings
        self._settings = settings
        self._catalog = Catalog(settings)
        if self.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.metrics_host, self.metrics_port)
        # Before any client that would log every failed connection attempt: a broker
        # that is not there is one clear error within seconds, not minutes of noise.
        source = broker_source(settings.brokers)
        log.info("worker %s: connecting to %s (from %s)", self.worker_id, settings.brokers,
                 source)
        reached = False
        try:
            reached = await wait_for_broker(settings, [self._catalog.functions,
                                                       self._catalog.tasks], source=source,
                                            stopping=lambda: self._stop_requested)
        finally:
            if not reached:
                self.metrics.close()  # returning or raising: no shutdown below closes it
        if not reached:
            return
        self._attach(Producer(settings, client_id=f"stepstream-worker-{self.client.app_id}"),
                     ThreadPoolExecutor(max_workers=self.concurrency,
                                        thread_name_prefix="stepstream-step"))
        self._consumer_thread = ThreadPoolExecutor(max_workers=1,
                                                   thread_name_prefix="stepstream-consumer")
        try:
            if not await self._register():
                # Stopped while registering: the unacknowledged registrations must not
                # hold the shutdown for its whole timeout.
                self._producer.close(0)
                return
            self._consumer = TaskConsumer(settings, self._catalog, self.client.app_id,
                                          self._tracker, self.worker_id, self._partitions_gone)
            self._consumer.subscribe()
            log.info("worker %s: %d function(s) of app %r, consuming %s", self.worker_id,
                     len(self.client.functions), self.client.app_id, self._catalog.tasks)
            self.ready.set()
            await self._consume()
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Ask the worker to stop; safe from any thread or a signal handler."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stop_requested = True
            return
        try:
            running_here = asyncio.get_running_loop() is loop
        except RuntimeError:
            running_here = False
        if running_here:
            self._stop_requested = True
        else:
            loop.call_soon_threadsafe(setattr, self, "_stop_requested", True)

    # -- start and stop --------------------------------------------------------------

    def _attach(self, producer: Producer, steps_pool: ThreadPoolExecutor) -> None:
        """Take the producer and the step threads (``_settings`` and ``_catalog`` set)."""
        self._producer = producer
        self._steps_pool = steps_pool
        self._delivery = Delivery(producer, self._settings, self._catalog, self.worker_id,
                                  stopping=lambda: self._stop_requested)
        self._runner = TaskRunner(self.client, self._settings, self._catalog, self._delivery,
                                  self._refs, steps_pool, self.worker_id, self._spawn_side,
                                  self._observe)

    def _on_signal(self) -> None:
        if self._stop_requested:
            log.warning("worker %s: second signal, cancelling %d running task(s)",
                        self.worker_id, len(self._running))
            for runner in self._running:
                runner.cancel()
        else:
            log.info("worker %s: stopping (signal again to stop at once)", self.worker_id)
            self.stop()

    async def _register(self) -> bool:
        return await register(self._producer, self._settings, self.client.app_id,
                              self.client.functions, stopping=lambda: self._stop_requested)

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        tasks = set(self._running)
        if tasks:
            log.info("worker %s: waiting up to %.0fs for %d running task(s)", self.worker_id,
                     self.shutdown_timeout, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._side_tasks:
            await asyncio.wait(set(self._side_tasks), timeout=self.shutdown_timeout)
        if self._consumer is not None:
            await loop.run_in_executor(self._consumer_thread, self._consumer.close)
        self._producer.close(self.shutdown_timeout)
        self._refs.close()
        self._consumer_thread.shutdown(wait=True)
        self._steps_pool.shutdown(wait=False, cancel_futures=True)
        self.metrics.close()
        if self._tracer is not None:
            self._tracer.shutdown()
        log.info("worker %s: stopped", self.worker_id)

    # -- loop thread -----------------------------------------------------------------

    async def _consume(self) -> None:
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        while not self._stop_requested:
            self._start_queued()
            room = (self.concurrency + self.prefetch - len(self._running)
                    - len(self._jobs.backlog))
            if room <= 0:
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), FULL_WAIT_S)
                room = max(0, self.concurrency + self.prefetch - len(self._running)
                           - len(self._jobs.backlog))
            batch = await loop.run_in_executor(self._consumer_thread, self._consumer.poll, room)
            for msg in batch:
                self._accept(msg)

    def _partitions_gone(self, partitions: set[int]) -> None:
        # Called on the consumer thread; the jobs belong to the loop.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._jobs.drop_queued, partitions)

    def _accept(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != confluent_kafka.KafkaError._PARTITION_EOF:
                log.warning("worker %s: consumer error: %s", self.worker_id, err)
            return
        partition, offset = msg.partition(), msg.offset()
        if self._tracker.take_known_done(partition, offset):
            return
        self._tracker.start(partition, offset)
        settings = self._settings
        try:
            task = decode(msg.value(), max_bytes=settings.max_record_bytes,
                          max_depth=settings.max_depth,
                          expect=(records.Task, records.TaskCancelled))
            if isinstance(task, records.TaskCancelled):
                self._cancelled(task, partition, offset)
                return
            assert isinstance(task, records.Task)
            self.metrics.tasks.inc()
            problem = check_task(task)
            if problem is not None:
                raise DecodeError(problem)
        except DecodeError as exc:
            log.warning("worker %s: undecodable task at %s[%d]@%d: %s", self.worker_id,
                        msg.topic(), partition, offset, exc)
            self._spawn_side(self._dead_letter(msg, str(exc)))
            failure = _refs.oversized_task_report(msg.value(), settings, self.client.app_id,
                                                  self.worker_id)
            if failure is not None:  # fail its run rather than leave it waiting for ever
                self._spawn_side(self._delivery.until_delivered(
                    self._catalog.runs, failure[0], failure[1], "TaskTooLarge report"))
            return
        if task.app_id != self.client.app_id:
            self._tracker.done(partition, offset)
            return
        progress = self._consumer.take_progress(task.run_id, task.seq) if self._consumer \
            else None
        if progress:
            # A previous owner ran this task ahead and checkpointed these steps.
            task.steps.update(progress)
        self._jobs.add(task, partition, offset)

    def _cancelled(self, rec: records.TaskCancelled, partition: int, offset: int) -> None:
        """The run ended while ``rec.task_seq`` may be executing: stop running it ahead,
        drop it if still queued."""
        if (isinstance(rec.run_id, str) and isinstance(rec.app_id, str)
                and isinstance(rec.task_seq, int) and rec.app_id == self.client.app_id):
            self._jobs.cancel(rec.run_id, rec.task_seq)
            self.metrics.cancellations.inc()
        self._tracker.done(partition, offset)

    def _start_queued(self) -> None:
        while len(self._running) < self.concurrency:
            job = self._jobs.next_to_start()
            if job is None:
                return
            runner = asyncio.ensure_future(self._run_job(job))
            self._running.add(runner)
            runner.add_done_callback(self._on_job_done)

    def _spawn_side(self, coro: Any) -> None:
        side = asyncio.ensure_future(coro)
        self._side_tasks.add(side)
        side.add_done_callback(self._side_tasks.discard)

    def _observe(self, task: records.Task, outcomes: list[records.Outcome]) -> None:
        """What one execution of ``task`` produced: counted, and traced if on."""
        self.metrics.outcomes(task.fn_id, outcomes)
        if self._tracer is not None:
            self._tracer.outcomes(task, outcomes)

    async def _run_job(self, job: Job) -> None:
        delivered = False
        self.metrics.passes.labels(job.task.fn_id).inc()
        try:
            delivered = await self._runner.run(
                job.task, lambda: not job.revoked and not self._stop_requested)
        finally:
            if delivered:
                self._jobs.finish(job)
            else:
                # Cancelled or stopping before the report went out: the task stays
                # uncommitted, so this or another worker runs it again.
                self._jobs.abandon(job)

    def _on_job_done(self, runner: asyncio.Task[None]) -> None:
        self._running.discard(runner)
        self._slot_freed.set()
        if not runner.cancelled() and runner.exception() is not None:
            log.error("worker %s: task runner failed", self.worker_id,
                      exc_info=runner.exception())
        if not self._stop_requested:
            self._start_queued()

    async def _dead_letter(self, msg: Any, reason: str) -> None:
        if await self._delivery.dead_letter(msg, reason):
            self._tracker.done(msg.partition(), msg.offset())
