"""The engine's processor loop: router, folds, timers and cron on one consumer.

One consumer in group ``{prefix}engine`` reads ``events``, ``runs`` and ``waits``. Each
turn:

1. catch up on the function registry (``functions``, read whole by every engine);
2. take a batch: ``poll`` for the first record, then drain what is already fetched;
3. route ``events`` (an event to ``run.requested`` records and a copy on ``waits``;
   an ``invoke.requested`` to the child's ``run.requested``); fold ``runs`` and
   ``waits`` records per partition (:mod:`engine.runtime.batch`) against a per-batch
   view of that partition's RocksDB tables;
4. produce what the batch emitted, and the last round's timers and cron ticks
   (idempotent producer, acks=all), and flush once: one request per partition;
5. write each partition's state changes and its next offset in one WriteBatch;
6. commit offsets to Kafka asynchronously (RocksDB's offsets win on restart);
7. fire due timers (:mod:`engine.runtime.timers`) as ``timer.fired`` records onto the
   run's own partition, and due cron ticks (:mod:`engine.runtime.cron`) as
   ``run.requested``.

A crash anywhere re-delivers at most the last batch; the fold ignores what it has
applied, and consumers of emitted records dedupe by deterministic ids and sequences.
"""

from __future__ import annotations

import gc
import heapq
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from engine import fold
from engine.clock import now_ms
from engine.observe.metrics import EngineMetrics, metrics_enabled
from engine.observe.tracing import RunTracer
from engine.runtime import lifecycle
from engine.runtime.batch import RUNS_FOLD, WAITS_FOLD, apply_batch, dead_letter
from engine.runtime.cron import CronService
from engine.runtime.gaps import GapGuard
from engine.runtime.history import history_targets
from engine.runtime.inputs import InputRouter
from engine.runtime.lag import LagMeter, producer_stats
from engine.runtime.recovery import StateCorrupt, is_corruption, open_store, reason_of, set_aside
from engine.runtime.restore import Restorer
from engine.runtime.router import Registry
from engine.runtime.snapshot import SnapshotWriter
from engine.runtime.timers import TimerService
from engine.store.partition import PartitionStore, StateMemory
from topics.catalog import Catalog, partition_for
from topics.codec import DecodeError, decode, encode
from topics.records import (
    DeadLetter,
    FunctionRegistered,
    bounded_dead_letter,
)
from topics.settings import Settings

log = logging.getLogger("stepstream.processor")

MAX_POLL_WAIT_S = 0.1
# One Produce request per partition per flush (librdkafka), each ~1 ms of the dev
# broker's CPU. Every path here flushes, so linger only bounds how long a round's
# produce loop may take before it is split (1 ms: 2,000 records in 4-5 requests).
ENGINE_LINGER_MS = 100
FIRED_FLUSH_S = 5.0  # timers and cron ticks not delivered are fired again: only log
TRIM_EVERY_S = 5.0


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim with
        return None


_malloc_trim = _load_malloc_trim()


def tune_gc() -> None:
    """Collect the young generation less often: the fold allocates many short-lived
    containers and few cycles, and the default threshold (700) cost ~13% of the loop's
    CPU (fold rate 28k -> 36k records/s in-process when raised)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def producer_config(settings: Settings) -> dict[str, Any]:
    """The engine producer's librdkafka settings (also for measuring it: bench/)."""
    return settings.client_config({**settings.producer_tuning(),
                                   "linger.ms": ENGINE_LINGER_MS,
                                   "client.id": "stepstream-engine"})


class Processor:
    """Owns the consumer, producer and partition stores of one engine process."""

    def __init__(self, settings: Settings, state_dir: Path, *, batch_size: int = 5000,
                 clock_ms: Callable[[], int] = now_ms) -> None:
        if not settings.brokers:
            raise ValueError("no Kafka brokers configured")
        self.settings = settings
        self.catalog = Catalog(settings)
        self.state_dir = state_dir
        self.batch_size = batch_size
        self.clock_ms = clock_ms
        self.registry = Registry()
        self.stores: dict[int, PartitionStore] = {}
        self.wait_stores: dict[int, PartitionStore] = {}
        self.stores_lock = threading.Lock()
        self.live_from: dict[tuple[str, int], int] = {}
        # A partition read past a missing offset: that offset and when it was first seen.
        self.timers = TimerService(self.catalog.runs)
        self.ready = threading.Event()
        # Set when the owned runs partitions change: the peer table advertises them.
        self.assignment_changed = threading.Event()
        self.stopping = threading.Event()
        self.applied = 0
        self.applied_runs = 0  # of them, ``runs`` records (a restore's re-fold, counted)
        self.produce_errors: list[str] = []
        self.consumer = Consumer(settings.client_config({
            **settings.consumer_tuning(),
            "group.id": settings.prefix + "engine",
            "client.id": "stepstream-engine",
        }))
        self.registry_consumer = Consumer(settings.client_config({
            **settings.consumer_tuning(),
            "group.id": settings.prefix + "engine-registry",
            "enable.partition.eof": True,
        }))
        self.stats = producer_stats("stepstream-engine", settings)
        self.producer = Producer({**producer_config(settings), **self.stats.config()})
        self.unflushed = False  # timer or cron records produced, not yet flushed
        self.cron = CronService(self.catalog, settings.retry_backoff_base_ms)
        self.memory = StateMemory(settings.state_memtable_mb, settings.state_block_cache_mb)
        self.next_trim = 0.0
        self.subscribed_sources: tuple[str, ...] = ()
        self.subscribed_version = -1
        self.gap_guard = GapGuard(self.consumer)
        self.inputs = InputRouter(self.catalog, settings, self.registry,
                                  emit_target=self._emit_target,
                                  dead_target=self._dead_target)
        self.lag = LagMeter({self.catalog.events: "events", self.catalog.runs: "runs",
                             self.catalog.waits: "waits"})
        # Metrics and traces, taken at this edge after each batch (engine/observe).
        self.metrics = EngineMetrics(enabled=metrics_enabled(), lag=self.lag.partitions)
        self.tracer = RunTracer.from_env()
        # Bounded restore: snapshots of live state, finished runs on history.
        self.restorer = Restorer(settings, self.catalog, self.assignment_changed)
        self.snapshots = SnapshotWriter(self.catalog, self.producer,
                                        settings.snapshot_interval_ms, clock_ms)

    # --- lifecycle -------------------------------------------------------------

    def run(self) -> None:
        """The loop; returns when :meth:`stop` is called."""
        tune_gc()
        self._load_registry()
        self._subscribe()
        try:
            while not self.stopping.is_set():
                self._drain_registry()
                # Only a registry change can add or drop a source topic.
                if self.registry.version != self.subscribed_version:
                    self.subscribed_version = self.registry.version
                    if self.inputs.source_topics() != self.subscribed_sources:
                        self._subscribe()
                # Last round's timers and cron ticks go out with this round's flush.
                batch = self._take_batch(0 if self.unflushed else self._poll_wait_s())
                if batch:
                    self._process(batch)
                self._snapshot_round()
                self._flush_fired()
                self._fire_timers()
                self._fire_cron()
                self._trim_heap()
                self.lag.sample(self.consumer)
        finally:
            self._shutdown()

    def stop(self) -> None:
        self.stopping.set()

    def _subscribe(self) -> None:
        """Our input topics plus the source topics: read as ``events`` is, in the same
        group, so their offsets are committed the same way after their runs are stored.
        A new source topic re-subscribes, which rebalances the group."""
        self.subscribed_version = self.registry.version
        self.subscribed_sources = self.inputs.source_topics()
        if self.subscribed_sources:
            log.info("reading source topics: %s", ", ".join(self.subscribed_sources))
        self.consumer.subscribe([self.catalog.events, self.catalog.runs, self.catalog.waits,
                                 *self.subscribed_sources],
                                on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)

    def owned_stores(self) -> list[PartitionStore]:
        with self.stores_lock:
            return list(self.stores.values())

    def owned_partitions(self) -> list[int]:
        """The ``runs`` partitions this process owns and has restored up to where their
        previous owner was (before that, their runs may be missing or behind)."""
        with self.stores_lock:
            stores = sorted(self.stores.items())
        owned = []
        for p, store in stores:
            with store.lock:
                if store.closed or store.history_pending:
                    continue  # its finished runs are loading: it cannot answer for all
                if store.next_offset() >= self.live_from.get((self.catalog.runs, p), 0):
                    owned.append(p)
        return owned

    def _shutdown(self) -> None:
        self.producer.flush(10)
        self.stats.close(self.producer.poll)
        if self.tracer is not None:
            self.tracer.shutdown()
        try:
            self.consumer.close()
        except Exception:  # closing during broker loss must not hide the real error
            log.exception("consumer close failed")
        self.registry_consumer.close()
        with self.stores_lock:
            for store in [*self.stores.values(), *self.wait_stores.values()]:
                store.close()
            self.stores.clear()
            self.wait_stores.clear()

    # --- registry ----------------------------------------------------------------

    def _load_registry(self) -> None:
        """Read the whole function registry before routing any event."""
        # Offset 0, not OFFSET_BEGINNING: resolving that cost 0.5 s per start on the dev
        # broker; where compaction removed offset 0, auto.offset.reset=earliest applies.
        self.registry_consumer.assign([TopicPartition(self.catalog.functions, 0, 0)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.stopping.is_set():
            msgs = self.registry_consumer.consume(500, 0.2)
            if any((e := m.error()) is not None and e.code() == KafkaError._PARTITION_EOF
                   for m in msgs):
                self._apply_registry(msgs)
                return
            self._apply_registry(msgs)
        log.warning("function registry not read to its end within 30 s; going on")

    def _drain_registry(self) -> None:
        msgs = self.registry_consumer.consume(500, 0)
        if msgs:
            self._apply_registry(msgs, live=True)

    def _apply_registry(self, msgs: list[Message], live: bool = False) -> None:
        for m in msgs:
            if m.error():
                continue
            if m.value() is None:
                key = m.key()
                if isinstance(key, bytes):
                    fn_id = key.decode(errors="replace")
                    if live and fn_id in self.registry.functions:
                        # Said out loud: from here its events start no run, which looks
                        # like lost events to whoever did not remove it.
                        log.warning("function %s removed from the registry (DELETE "
                                    "/v1/functions or an app sync without it): its events "
                                    "start no runs and its cron stops; runs in flight go on",
                                    fn_id)
                    self.registry.remove(fn_id)
                continue
            try:
                rec = decode(m.value(), max_bytes=self.settings.max_record_bytes,
                             max_depth=self.settings.max_depth, expect=(FunctionRegistered,))
            except DecodeError as exc:
                # Every engine process reads the whole registry, so with several engines
                # the same bad definition is dead-lettered once by each of them.
                log.error("undecodable function definition at offset %s: %s", m.offset(), exc)
                self._produce_all([self._dead_target(
                    dead_letter(m, f"undecodable: {exc}", self.clock_ms(),
                                self.settings.max_record_bytes))])
                continue
            assert isinstance(rec, FunctionRegistered)
            self.registry.apply(rec)

    # --- partitions ----------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stateful = [tp for tp in partitions
                    if tp.topic in (self.catalog.runs, self.catalog.waits)]
        routed = [tp for tp in partitions if tp.topic == self.catalog.events]
        asked = [TopicPartition(tp.topic, tp.partition) for tp in [*stateful, *routed]]
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in (consumer.committed(asked, timeout=30) if asked else [])}
        for tp in routed:
            self.gap_guard.assigned(tp.topic, tp.partition,
                                    committed.get((tp.topic, tp.partition)))
        for tp in stateful:
            p = tp.partition
            runs = tp.topic == self.catalog.runs
            name = "runs" if runs else "waits"
            store = open_store(self.state_dir / f"{name}-{p}", self.memory,
                               on_corrupt=self._rebuilding(tp.topic, p))
            # Nothing committed: no owner processed it, so no snapshot to look for.
            self._restore(name, p, store, committed.get((tp.topic, p), 0) > 0)
            with self.stores_lock:
                (self.stores if runs else self.wait_stores)[p] = store
            start = store.next_offset()
            # Records below the group's committed offset were processed (and their
            # emits produced) by whoever owned the partition before: fold them again
            # silently to rebuild state, then go live.
            live = max(committed.get((tp.topic, p), 0), 0)
            self.live_from[(tp.topic, p)] = live
            if runs:
                self.timers.assigned(p, store)
                self.metrics.assigned(p, store)
            tp.offset = start
            log.info("%s[%d]: restoring from offset %d, live from %d", name, p, start, live)
        self.inputs.start_sources(consumer, partitions)
        consumer.assign(partitions)
        self.lag.assigned(partitions)
        self.assignment_changed.set()
        self.ready.set()

    def _rebuild(self, topic: str, p: int, damage: StateCorrupt, live_from: int) -> None:
        """Found damaged while running: set the database aside, restore the partition
        from offset 0, silently up to ``live_from`` (whose emits were produced)."""
        runs = topic == self.catalog.runs
        table = self.stores if runs else self.wait_stores
        with self.stores_lock:
            old = table.pop(p)
        if runs:
            self.restorer.forget(p)
        old.close()
        report = self._rebuilding(topic, p)
        report(set_aside(old.path, damage.reason))
        store = open_store(old.path, self.memory, on_corrupt=report)
        self._restore("runs" if runs else "waits", p, store)
        with self.stores_lock:
            table[p] = store
        key = (topic, p)
        self.live_from[key] = max(self.live_from.get(key, 0), live_from)
        if runs:
            self.timers.forget(p)
            self.metrics.assigned(p, store)
        # Drops what was fetched beyond the offset too: the restore reads it again.
        self.consumer.seek(TopicPartition(topic, p, store.next_offset()))

    def _restore(self, table: str, p: int, store: PartitionStore, look: bool = True) -> None:
        """Bounded restore of an empty database (engine/runtime/restore.py)."""
        self.snapshots.assigned(table, p)
        self.restorer.opened(table, p, store, self.producer, look=look)

    def _snapshot_round(self) -> None:
        self.restorer.resume_ready(self.consumer, self.stores)
        with self.stores_lock:
            owned = [("runs", p, s) for p, s in self.stores.items()]
            owned += [("waits", p, s) for p, s in self.wait_stores.items()]
        self.snapshots.write_due(owned)

    @staticmethod
    def _rebuilding(topic: str, p: int) -> Callable[[StateCorrupt], None]:
        def report(c: StateCorrupt) -> None:
            # The topic is the source of truth: an empty database restores from offset
            # 0, silently up to where the partition was live, as on a fresh machine.
            log.error("%s: corrupt RocksDB state (%s); moved it to %s and rebuilding "
                      "%s[%d] from the topic", c.path, c.reason, c.moved_to, topic, p)
        return report

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.gap_guard.revoked(tp.topic, tp.partition)
            if tp.topic not in (self.catalog.runs, self.catalog.waits):
                continue
            table = self.stores if tp.topic == self.catalog.runs else self.wait_stores
            with self.stores_lock:
                store = table.pop(tp.partition, None)
            if tp.topic == self.catalog.runs:
                self.restorer.forget(tp.partition)
            if store is not None:
                store.close()
            self.snapshots.forget("runs" if tp.topic == self.catalog.runs else "waits",
                                  tp.partition)
            if tp.topic == self.catalog.runs:
                self.timers.forget(tp.partition)
                self.metrics.forget(tp.partition)
            self.live_from.pop((tp.topic, tp.partition), None)
        self.assignment_changed.set()
        try:
            consumer.unassign()
        except Exception:
            log.debug("unassign during revoke failed", exc_info=True)

    # --- the batch ---------------------------------------------------------------

    def _poll_wait_s(self) -> float:
        wait = MAX_POLL_WAIT_S
        now = self.clock_ms()
        for due in (self.timers.earliest(), self.cron.next_due):
            if due is not None:
                wait = min(wait, max(0.0, (due - now) / 1000))
        return wait

    def _take_batch(self, wait_s: float) -> list[Message]:
        # consume(n, t) blocks until n records or t; poll() returns on the first record.
        first = self.consumer.poll(wait_s)
        if first is None:
            return []
        return [first, *self.consumer.consume(self.batch_size - 1, 0)]

    def _process(self, batch: list[Message]) -> None:
        now = self.clock_ms()
        out: list[tuple[str, int, str | bytes | None, bytes]] = []
        by_partition: dict[tuple[str, int], list[Message]] = defaultdict(list)
        commits: dict[tuple[str, int], int] = {}
        events: dict[tuple[str, int], list[Message]] = defaultdict(list)
        for m in batch:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            topic, p, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and p is not None and offset is not None
            if topic == self.catalog.events or topic in self.subscribed_sources:
                events[(topic, p)].append(m)
            else:
                by_partition[(topic, p)].append(m)
        for (topic, p), fetched in list(events.items()):
            # Only our own topic: a source topic may be compacted or transactional, where
            # offsets skip by design.
            if topic == self.catalog.events:
                fetched = events[(topic, p)] = self.gap_guard.events_up_to_a_gap(
                    topic, p, fetched)
            if fetched:
                commits[(topic, p)] = max(m.offset() or 0 for m in fetched) + 1
        # Events of different partitions arrive interleaved by fetch, not by when they
        # were sent: route them in send order (the producer's timestamp, then the id,
        # which one client makes monotonic), so runs that share a flow-control key are
        # requested — and queued — in that order. Each partition's own order is kept.
        for m in heapq.merge(*events.values(), key=_send_order):
            out.extend(self.inputs.route(m, now))

        views = []
        for (topic, p), fetched in by_partition.items():
            runs = topic == self.catalog.runs
            store = (self.stores if runs else self.wait_stores).get(p)
            if store is None:
                continue  # revoked while the batch was in flight; the next owner has it
            msgs = self.gap_guard.up_to_a_gap(topic, p, fetched, store.next_offset())
            if not msgs:
                continue
            try:
                result = apply_batch(store, msgs, self.settings, now_ms=now,
                                     live_from=self.live_from.get((topic, p), 0),
                                     folder=RUNS_FOLD if runs else WAITS_FOLD)
            except StateCorrupt as damage:
                self._rebuild(topic, p, damage, live_from=msgs[0].offset() or 0)
                continue
            self.applied += result.applied
            self.applied_runs += result.applied if runs else 0
            if result.blocked_at is not None:
                self.restorer.blocked(self.consumer, topic, p, result.blocked_at)
            if runs and self.settings.snapshot_interval_ms:
                out.extend(history_targets(self.catalog, p, result.view.archived(),
                                           result.next_offset, self.settings.max_record_bytes))
            for e in result.emits:
                out.append(self._emit_target(lifecycle.place(
                    e, self.registry, self.settings.lifecycle_events)))
            for d in result.dead:
                out.append(self._dead_target(d))
            views.append((p if runs else None, store, result))
            commits[(topic, p)] = result.next_offset

        try:
            self._produce_all(out)
        except BaseException:
            for _p, _store, result in views:
                result.view.discard()
            raise
        for runs_p, _store, result in views:
            self._observe(runs_p, result)
            result.view.commit(result.next_offset)
            if runs_p is not None:
                self.timers.committed(runs_p, result.view)
        if commits:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in
                                          commits.items()], asynchronous=True)

    def _observe(self, runs_p: int | None, result: Any) -> None:
        """Count what a batch did (before it is written: the store still holds the old
        values the metrics compare with), and trace the runs that ended in it."""
        topic = "runs" if runs_p is not None else "waits"
        # A batch of records folded again to restore state was counted by its first owner.
        live = runs_p is not None and result.next_offset > self.live_from.get(
            (self.catalog.runs, runs_p), 0)
        ended = self.metrics.batch_written(topic, runs_p, result.view, result.applied, live)
        if self.tracer is not None:
            for state in ended:
                self.tracer.run_ended(state)

    def _emit_target(self, e: fold.Emit) -> tuple[str, int, str, bytes]:
        topic = {"tasks": self.catalog.tasks, "runs": self.catalog.runs,
                 "events": self.catalog.events, "waits": self.catalog.waits}[e.topic]
        return topic, partition_for(e.key, self.catalog.partitions), e.key, encode(e.record)

    def _dead_target(self, d: DeadLetter) -> tuple[str, int, bytes | None, bytes]:
        self.metrics.dead_letter(d)
        key = d.key
        p = partition_for(key, self.catalog.partitions) if key else d.partition % \
            self.catalog.partitions
        return self.catalog.dlq, p, key, encode(d)

    def _fits(self, target: tuple[str, int, Any, bytes]) -> tuple[str, int, Any, bytes]:
        """The record to produce, or its bounded dead letter when it is over the record
        limit: the producer refuses such a record on every retry, so sending it as is would
        stop this process at each restart (the fold bounds what it emits; this is the
        guard for anything that still slips past)."""
        topic, p, key, value = target
        if len(value) <= self.settings.max_record_bytes:
            return target
        reason = (f"emitted record of {len(value)} bytes is over the "
                  f"{self.settings.max_record_bytes}-byte record limit "
                  f"(STEPSTREAM_MAX_RECORD_BYTES); not written to {topic}")
        log.error("%s (key %r)", reason, key)
        raw_key = key.encode() if isinstance(key, str) else key
        return self._dead_target(bounded_dead_letter(
            source_topic=topic, partition=p, offset=-1, key=raw_key, value=value,
            reason=reason, ts=self.clock_ms(), max_record_bytes=self.settings.max_record_bytes,
            extra={"emitted": True}))

    def _produce_all(self, out: list[tuple[str, int, Any, bytes]]) -> None:
        if not out:
            return
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        for topic, p, key, value in map(self._fits, out):
            while True:
                try:
                    self.producer.produce(topic, value, key, partition=p, on_delivery=on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.05)
        remaining = self.producer.flush(60)
        if remaining or failures:
            # State is not written, so the batch is re-applied on restart; refusing to go
            # on is the only way not to lose emitted records.
            raise RuntimeError(f"could not produce {remaining} record(s): {failures[:3]}")

    def _fire_timers(self) -> None:
        now, fired = self.clock_ms(), False
        for p, store in list(self.stores.items()):
            try:
                fired |= self.timers.fire({p: store}, now, self.producer.produce)
            except Exception as exc:
                if not is_corruption(exc):
                    raise
                self._rebuild_found_outside_a_batch(p, StateCorrupt(store.path,
                                                                    reason_of(exc)))
        self.unflushed |= fired

    def _rebuild_found_outside_a_batch(self, p: int, damage: StateCorrupt) -> None:
        """Damage met by the timer or cron pass of ``runs`` partition ``p``: rebuilt in
        place like damage met by the fold. What the store had applied was produced, so
        the restore is silent up to there (or, if even that cannot be read, replays
        every emit, which their consumers dedupe)."""
        try:
            live_from = self.stores[p].next_offset()
        except Exception:
            live_from = 0
        self._rebuild(self.catalog.runs, p, damage, live_from=live_from)

    def _trim_heap(self) -> None:
        """Give freed C heap back to the system now and then: batches of decoded states
        leave tens of MB freed but still mapped (bench.holding: 376 -> 308 MB RSS with
        100k parked runs, together with the shared block cache)."""
        now = time.monotonic()
        if now < self.next_trim:
            return
        self.next_trim = now + TRIM_EVERY_S
        if _malloc_trim is not None:
            _malloc_trim(0)

    # --- cron --------------------------------------------------------------------

    def _fire_cron(self) -> None:
        """Fire the due cron ticks of the functions whose cron partition we own."""
        def is_live(p: int) -> bool:
            store = self.stores[p]
            return store.next_offset() >= self.live_from.get((self.catalog.runs, p), 0)

        try:
            requests = self.cron.due(self.registry, self.stores, is_live, self.clock_ms())
        except StateCorrupt as damage:
            p = next(p for p, store in self.stores.items() if store.path == damage.path)
            self._rebuild_found_outside_a_batch(p, damage)
            return
        for req in requests:
            self.producer.produce(self.catalog.runs, encode(req), req.partition_key,
                                  partition=partition_for(req.partition_key,
                                                          self.catalog.partitions))
        self.unflushed |= bool(requests)

    def _flush_fired(self) -> None:
        if self.unflushed and (left := self.producer.flush(FIRED_FLUSH_S)):
            log.warning("%d timer/cron record(s) not delivered yet; still queued", left)
        self.unflushed = False


def _send_order(m: Message) -> tuple[int, bytes]:
    _kind, ts = m.timestamp()
    return (ts if ts > 0 else 0, m.key() or b"")
