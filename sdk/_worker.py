"""The worker: consumes tasks, runs functions, reports outcomes.

Threads: one runs the consumer (every consumer call happens there, in order), the
producer has its own delivery thread, sync step handlers run in a pool, and user
functions run as tasks on the asyncio loop. Offsets are committed only below tasks
whose report was acknowledged, so a worker that dies mid-task leaves it to another;
the next owner skips the finished ones above the commit (:mod:`sdk._handover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import confluent_kafka

from sdk import _outcomes, _refs
from sdk._config import broker_source
from sdk._connect import client_logging, wait_for_broker
from sdk._durations import wall_ms
from sdk._execution import ExecutionResult, check_task, execute, function_not_found
from sdk._handover import finished_ahead
from sdk._offsets import OffsetTracker, SeqMemory
from sdk._producer import DeliveryError, Producer
from sdk._registration import remove_stale
from topics import records
from topics.catalog import Catalog, partition_for
from topics.codec import DecodeError, decode, encode

if TYPE_CHECKING:
    from sdk._client import Client

log = logging.getLogger("stepstream.worker")

# Keep the consumer thread's poll short so that pause/resume, commits and stop
# requests take effect quickly; a poll returns at once when a record arrives.
POLL_TIMEOUT_S = 0.05
# How long a saturated worker waits for a free slot before serving the consumer anyway.
FULL_WAIT_S = 1.0
MAX_REPORT_BACKOFF_S = 5.0


@dataclass(slots=True)
class _Job:
    task: records.Task
    # Every (partition, offset) holding this task: a rebalance can re-deliver a task
    # that is still running here, and the copy is finished along with the original.
    offsets: list[tuple[int, int]] = field(default_factory=list)
    running: bool = False


class Worker:
    """Runs one app's functions for tasks from the ``tasks`` topic.

    ``concurrency`` bounds the tasks running at once; up to ``prefetch`` more
    (default: as many, at least 32) wait in memory for a slot. ``run()`` blocks until SIGINT or
    SIGTERM (or :meth:`stop`); ``await run_async()`` does the same inside a loop.
    On stop, running tasks get ``shutdown_timeout`` seconds to finish; the rest are
    cancelled and left uncommitted for another worker.
    """

    def __init__(self, client: Client, *, concurrency: int = 100,
                 prefetch: int | None = None, shutdown_timeout: float = 30.0,
                 seq_memory: int = 100_000) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.client = client
        self.concurrency = concurrency
        self.prefetch = max(concurrency, 32) if prefetch is None else max(prefetch, 1)
        self.shutdown_timeout = shutdown_timeout
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._tracker = OffsetTracker()
        self._seqs = SeqMemory(seq_memory)
        self._jobs: dict[tuple[str, int], _Job] = {}
        self._backlog: deque[_Job] = deque()
        self._queued: dict[str, _Job] = {}  # run id -> its task waiting in the backlog
        self._running: set[asyncio.Task[None]] = set()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Any = None
        self._slot_freed = asyncio.Event()
        self._refs = _refs.RefResolver(client.settings)  # reads large outputs; lazy
        # Set once the functions are registered and the worker is consuming.
        self.ready = threading.Event()

    # -- public ----------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGINT/SIGTERM or :meth:`stop`; a second signal stops at once."""
        asyncio.run(self._run_with_signals())

    async def run_async(self) -> None:
        """Run inside the current loop until :meth:`stop` is called."""
        self._loop = asyncio.get_running_loop()
        settings = self.client.settings
        self._settings = settings
        self._catalog = Catalog(settings)
        # Before any client that would log every failed connection attempt: a broker
        # that is not there is one clear error within seconds, not minutes of noise.
        source = broker_source(settings.brokers)
        log.info("worker %s: connecting to %s (from %s)", self.worker_id, settings.brokers,
                 source)
        if not await wait_for_broker(settings, [self._catalog.functions, self._catalog.tasks],
                                     source=source,
                                     stopping=lambda: self._stop_requested):
            return
        self._producer = Producer(settings, client_id=f"stepstream-worker-{self.client.app_id}")
        self._steps_pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                              thread_name_prefix="stepstream-step")
        self._consumer_thread = ThreadPoolExecutor(max_workers=1,
                                                   thread_name_prefix="stepstream-consumer")
        try:
            if not await self._register():
                # Stopped while registering: the unacknowledged registrations must not
                # hold the shutdown for its whole timeout.
                self._producer.close(0)
                return
            self._consumer = confluent_kafka.Consumer({
                "bootstrap.servers": settings.brokers,
                "group.id": f"{settings.prefix}workers.{self.client.app_id}",
                "client.id": f"stepstream-worker-{self.client.app_id}",
                **settings.consumer_tuning(),
                **client_logging(),
                "on_commit": _log_commit,
            })
            self._consumer.subscribe([self._catalog.tasks], on_assign=self._on_assign,
                                     on_revoke=self._on_revoke, on_lost=self._on_lost)
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

    async def _run_with_signals(self) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)

        def on_signal() -> None:
            if self._stop_requested:
                log.warning("worker %s: second signal, cancelling %d running task(s)",
                            self.worker_id, len(self._running))
                for runner in self._running:
                    runner.cancel()
            else:
                log.info("worker %s: stopping (signal again to stop at once)", self.worker_id)
                self.stop()

        installed = []
        for sig in signals:
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (ValueError, RuntimeError, NotImplementedError):
                pass  # not the main thread (or no signals here): stop() still works
        try:
            await self.run_async()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def _register(self) -> bool:
        """Publish the app's functions; False if the worker was asked to stop first
        (a signal must stop it in every phase, and a delivery can take minutes)."""
        now = wall_ms()
        sends = asyncio.gather(*(
            self._producer.send(self._catalog.functions, fn.id,
                                encode(fn.config.registration(now)), partition=0)
            for fn in self.client.functions
        ))
        while not (await asyncio.wait({sends}, timeout=0.1))[0]:
            if self._stop_requested:
                sends.cancel()
                with contextlib.suppress(asyncio.CancelledError, DeliveryError):
                    await sends
                return False
        try:
            sends.result()
            # App sync: the functions of this app it no longer defines are removed.
            await remove_stale(self._producer, self._settings, self.client.app_id,
                               [fn.id for fn in self.client.functions])
            return True
        except DeliveryError as exc:
            raise RuntimeError(
                f"worker could not register its functions on {self._catalog.functions} "
                f"(are the topics created and the broker at {self._settings.brokers}?): {exc}"
            ) from exc

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
            await loop.run_in_executor(self._consumer_thread, self._close_consumer)
        self._producer.close(self.shutdown_timeout)
        self._refs.close()
        self._consumer_thread.shutdown(wait=True)
        self._steps_pool.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s: stopped", self.worker_id)

    def _close_consumer(self) -> None:
        try:
            self._commit(asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            log.warning("worker %s: final commit failed: %s", self.worker_id, exc)
        self._consumer.close()

    # -- consumer thread -------------------------------------------------------------

    def _poll(self, room: int) -> list[Any]:
        """One round on the consumer thread: commits, then up to ``room`` records.

        The worker never pauses its partitions: on Tansu a resumed partition is fetched
        again only ~750 ms later (measured), which starved a busy worker. Instead, when
        every slot and the backlog are full the loop waits for a slot before polling, and
        then takes one record per round, so rebalance callbacks are still served and the
        backlog grows by at most one task per second while the worker is saturated.
        """
        consumer = self._consumer
        self._commit()
        msg = consumer.poll(POLL_TIMEOUT_S if room > 0 else 0)
        if msg is None:
            return []
        batch = [msg]
        if room > 1:
            # consume(n, timeout) waits for all n records: drain only what is here.
            batch.extend(consumer.consume(room - 1, 0))
        return batch

    def _commit(self, *, asynchronous: bool = True, partitions: list[int] | None = None) -> None:
        # Every round, not on a timer: a worker killed right after a report must not
        # leave the finished task uncommitted, or its successor runs it again.
        changed = self._tracker.take_changed(partitions)
        if changed:
            offsets = [confluent_kafka.TopicPartition(self._catalog.tasks, p, pos)
                       for p, pos in changed.items()]
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        assigned = [tp.partition for tp in partitions]
        self._tracker.forget(assigned)
        # Before any of it runs: tasks a previous owner finished but could not commit.
        for p, done in finished_ahead(self._settings, consumer, self._catalog.tasks,
                                      assigned).items():
            self._tracker.set_known_done(p, done)
        log.info("worker %s: assigned %s", self.worker_id,
                 sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = [tp.partition for tp in partitions]
        try:
            # Hand over what is finished, so the next owner does not redo it.
            self._commit(asynchronous=False, partitions=revoked)
        except confluent_kafka.KafkaException as exc:
            log.warning("worker %s: commit on revoke failed: %s", self.worker_id, exc)
        self._tracker.forget(revoked)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._drop_queued, set(revoked))
        log.info("worker %s: revoked %s", self.worker_id, sorted(revoked))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        lost = [tp.partition for tp in partitions]
        self._tracker.forget(lost)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._drop_queued, set(lost))
        log.warning("worker %s: lost %s", self.worker_id, sorted(lost))

    # -- loop thread -----------------------------------------------------------------

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop_requested:
            self._start_queued()
            room = self.concurrency + self.prefetch - len(self._running) - len(self._backlog)
            if room <= 0:
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), FULL_WAIT_S)
                room = max(0, self.concurrency + self.prefetch - len(self._running)
                           - len(self._backlog))
            batch = await loop.run_in_executor(self._consumer_thread, self._poll, room)
            for msg in batch:
                self._accept(msg)

    def _drop_queued(self, partitions: set[int]) -> None:
        """Forget queued (not running) tasks whose partitions went elsewhere."""
        keep: deque[_Job] = deque()
        for job in self._backlog:
            job.offsets = [(p, o) for p, o in job.offsets if p not in partitions]
            if job.offsets:
                keep.append(job)
            else:
                self._jobs.pop((job.task.run_id, job.task.seq), None)
                self._queued.pop(job.task.run_id, None)
        self._backlog = keep

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
                          max_depth=settings.max_depth, expect=(records.Task,))
            assert isinstance(task, records.Task)
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
                self._spawn_side(self._send_until_delivered(
                    self._catalog.runs, failure[0], failure[1], "TaskTooLarge report"))
            return
        if task.app_id != self.client.app_id:
            self._tracker.done(partition, offset)
            return
        key = (task.run_id, task.seq)
        job = self._jobs.get(key)
        if job is not None:
            job.offsets.append((partition, offset))
            return
        if self._seqs.is_stale(task.run_id, task.seq):
            self._tracker.done(partition, offset)
            return
        queued = self._queued.get(task.run_id)
        if queued is not None:
            if queued.task.seq > task.seq:
                self._tracker.done(partition, offset)
                return
            # The engine wrote the newer task after applying the older one's report
            # (a new worker re-reading uncommitted tasks meets both): the older one is
            # superseded, and running it would re-run a step that already completed.
            self._backlog.remove(queued)
            self._finish(queued)
        job = _Job(task, [(partition, offset)])
        self._jobs[key] = job
        self._queued[task.run_id] = job
        self._backlog.append(job)

    def _start_queued(self) -> None:
        while self._backlog and len(self._running) < self.concurrency:
            job = self._backlog.popleft()
            task = job.task
            self._queued.pop(task.run_id, None)
            if self._seqs.is_stale(task.run_id, task.seq):
                self._finish(job)
                continue
            self._seqs.started(task.run_id, task.seq)
            job.running = True
            runner = asyncio.ensure_future(self._run_job(job))
            self._running.add(runner)
            runner.add_done_callback(self._on_job_done)

    def _finish(self, job: _Job) -> None:
        for p, o in job.offsets:
            self._tracker.done(p, o)
        self._jobs.pop((job.task.run_id, job.task.seq), None)

    def _spawn_side(self, coro: Any) -> None:
        side = asyncio.ensure_future(coro)
        self._side_tasks.add(side)
        side.add_done_callback(self._side_tasks.discard)

    async def _run_job(self, job: _Job) -> None:
        task = job.task
        delivered = False
        if task.report_start:
            # Produced before any step runs (the side task starts first), not awaited.
            self._spawn_side(self._send_until_delivered(
                self._catalog.runs, task.partition_key,
                encode(records.RunStarted(run_id=task.run_id, task_seq=task.seq,
                                          worker=self.worker_id, ts=wall_ms())),
                f"run.started for run {task.run_id} task {task.seq}",
            ))
        try:
            result = await self._execute(task)
            result = await self._deliver_events(task, result)
            report = _outcomes.fit_report(
                records.OutcomesReported(run_id=task.run_id, task_seq=task.seq,
                                         outcomes=result.outcomes, worker=self.worker_id,
                                         ts=wall_ms()),
                self._settings.max_record_bytes,
            )
            delivered = await self._send_until_delivered(
                self._catalog.runs, task.partition_key, encode(report),
                f"report for run {task.run_id} task {task.seq}",
            )
        finally:
            if delivered:
                self._finish(job)
            else:
                # Cancelled or stopping before the report went out: the task stays
                # uncommitted, so this or another worker runs it again.
                self._jobs.pop((task.run_id, task.seq), None)

    def _on_job_done(self, runner: asyncio.Task[None]) -> None:
        self._running.discard(runner)
        self._slot_freed.set()
        if not runner.cancelled() and runner.exception() is not None:
            log.error("worker %s: task runner failed", self.worker_id,
                      exc_info=runner.exception())
        if not self._stop_requested:
            self._start_queued()

    async def _execute(self, task: records.Task) -> ExecutionResult:
        function = self.client.get_function(task.fn_id)
        if function is None:
            log.warning("worker %s: run %s asks for unknown function %r", self.worker_id,
                        task.run_id, task.fn_id)
            return function_not_found(task)
        try:
            task = await self._refs.resolve(task)
        except _refs.RefError as exc:
            log.warning("worker %s: run %s: %s", self.worker_id, task.run_id, exc)
            return ExecutionResult([exc.outcome])
        try:
            return await execute(function, task, settings=self._settings,
                                 executor=self._steps_pool)
        except Exception as exc:  # a bug in the SDK itself: report it and retry the run
            log.exception("worker %s: executing run %s failed", self.worker_id, task.run_id)
            return ExecutionResult([_outcomes.function_failed(exc, now_ms=wall_ms())])

    async def _deliver_events(self, task: records.Task,
                              result: ExecutionResult) -> ExecutionResult:
        """Deliver send_event steps' events; a step whose events failed is failed."""
        if not result.sends:
            return result
        topic = self._catalog.events
        n = self._settings.partitions
        failed: dict[str, str] = {}

        async def deliver(step_id: str, events: list[records.Event]) -> None:
            try:
                await asyncio.gather(*(
                    self._producer.send(topic, e.id, encode(e), partition_for(e.id, n))
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

    async def _send_until_delivered(self, topic: str, key: str | bytes | None, value: bytes,
                                    what: str) -> bool:
        """Produce until acknowledged; False if the worker is stopping first."""
        partition = partition_for(key or b"", self._settings.partitions)
        backoff = 0.1
        while True:
            try:
                await self._producer.send(topic, key, value, partition)
                return True
            except DeliveryError as exc:
                if self._stop_requested:
                    log.error("worker %s: %s not delivered, left for another worker: %s",
                              self.worker_id, what, exc)
                    return False
                log.warning("worker %s: %s not delivered, retrying: %s", self.worker_id,
                            what, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_REPORT_BACKOFF_S)

    async def _dead_letter(self, msg: Any, reason: str) -> None:
        partition, offset = msg.partition(), msg.offset()
        letter = records.bounded_dead_letter(
            source_topic=msg.topic(), partition=partition, offset=offset, key=msg.key(),
            value=msg.value(), reason=reason, ts=wall_ms(),
            max_record_bytes=self._settings.max_record_bytes, extra={"worker": self.worker_id},
        )
        delivered = await self._send_until_delivered(self._catalog.dlq, msg.key(),
                                                      encode(letter), "dead letter")
        if delivered:
            self._tracker.done(partition, offset)


def _log_commit(err: Any, partitions: list[Any]) -> None:
    if err is not None:
        log.warning("offset commit failed: %s", err)

