"""The engine's Prometheus metrics, kept at the processor's edge.

The processor calls :meth:`EngineMetrics.batch_written` once per partition batch, just
before it writes the batch (the produce has succeeded), with what it already holds: the
batch's view (the run states it changed, the keys it puts and deletes) and how many
records it folded. From those, :class:`~engine.observe.tally.RunTally` moves the runs
that changed; nothing is scanned per scrape. A partition's tally is built once when it
is assigned (every run state read once: see README, "Metrics").

``STEPSTREAM_METRICS=0`` turns all of it off (the hooks return at once and ``/metrics``
answers 404), which is how bench/metrics.py measures what it costs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rocksdict import ReadOptions

from engine.observe.tally import WORKER, RunTally
from engine.store import keys
from engine.store.partition import PartitionStore, unpack
from topics.records import DeadLetter

log = logging.getLogger("stepstream.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: runs last from milliseconds to days (sleeps, waits).
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600,
               86400)
_GATE_KINDS = ("batch", "debounce")
assert len(keys.GATE) == len(keys.TIMER)  # the edge tells them apart by one slice
_GATE_PREFIXES = tuple((keys.gate_key(kind, ""), kind) for kind in _GATE_KINDS)
# Dead-letter reasons start with their class ("undecodable: ...", "fold error: ...").
_REASON_CLASSES = {"undecodable": "undecodable", "not applicable": "not_applicable",
                   "fold error": "fold_error", "emitted record": "too_large"}


def metrics_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """False when ``STEPSTREAM_METRICS`` is ``0``/``false``/``off``/``no``."""
    return env.get("STEPSTREAM_METRICS", "1").strip().lower() not in ("0", "false", "off", "no")


def reason_class(reason: str) -> str:
    """The ``reason`` label of a dead letter: a few fixed classes, never the free text."""
    for prefix, label in _REASON_CLASSES.items():
        if reason.startswith(prefix):
            return label
    return "other"


class EngineMetrics:
    """The engine process's metrics registry and the hooks the processor calls.

    ``lag`` returns ``[(topic short name, partition, lag | None)]`` (the processor's
    :class:`~engine.runtime.lag.LagMeter`)."""

    def __init__(self, *, enabled: bool = True,
                 lag: Callable[[], Iterable[tuple[str, int, int | None]]] = list) -> None:
        self.enabled = enabled
        self.tally = RunTally()
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.started = Counter("stepstream_runs_started", "Runs begun (skipped ones not).",
                               ["function"], registry=r)
        self.ended = Counter("stepstream_runs_ended",
                             "Runs ended, by status: completed, failed, cancelled, skipped.",
                             ["function", "status"], registry=r)
        self.duration = Histogram("stepstream_run_duration_seconds",
                                  "Time from a run's request to its end.", ["function"],
                                  buckets=RUN_BUCKETS, registry=r)
        self.dead = Counter("stepstream_dead_letters", "Records written to the dlq topic.",
                            ["source", "reason"], registry=r)
        self.folded = Counter("stepstream_records_folded",
                              "Records applied by the folds.", ["topic"], registry=r)
        self.assign_seconds = Counter("stepstream_tally_rebuild_seconds",
                                      "Time spent reading run states to build the "
                                      "waiting tallies of assigned partitions.", registry=r)
        r.register(_Gauges(self.tally, lag))
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    # --- hooks (processor thread) --------------------------------------------------

    def assigned(self, p: int, store: PartitionStore) -> None:
        """``runs`` partition ``p`` is ours: read its runs, gates and timers once.
        Never raises: damaged state is the processor's to find and rebuild (it then
        calls this again); until then the partition counts as empty here."""
        if not self.enabled:
            return
        began = time.perf_counter()
        try:
            states = (unpack(raw) for _key, raw in _scan(store, keys.RUN))
            gates = [(key, fn, kind) for prefix, kind in _GATE_PREFIXES
                     for key, raw in _scan(store, prefix)
                     if (fn := _gate_fn(raw)) is not None]
            timers = sum(1 for _ in _scan(store, keys.TIMER))
            self.tally.assign(p, states, gates, timers)
        except Exception:
            log.warning("runs[%d]: could not read its state for the metrics; counted as "
                        "empty", p, exc_info=True)
            self.tally.assign(p, [], [], 0)
        spent = time.perf_counter() - began
        self.assign_seconds.inc(spent)
        log.debug("runs[%d]: metrics tally built in %.3f s", p, spent)

    def forget(self, p: int) -> None:
        if self.enabled:
            self.tally.forget(p)

    def batch_written(self, topic: str, p: int | None, view: Any, applied: int,
                      live: bool) -> list[Mapping[str, Any]]:
        """A batch of ``topic`` (short name; ``p`` is set for ``runs``) is about to be
        written: its old values are still in the store. Returns the states of the
        runs that ended in it (for their trace spans), if ``live``."""
        if not self.enabled:
            return []
        if applied:
            self.folded.labels(topic).inc(applied)
        if p is None:
            return []
        db = view.store.db
        changed = [view.runs[run_id] for run_id in view.dirty]
        changes = self.tally.apply(p, changed,
                                   lambda run_id: db.get(keys.run_key(run_id)) is not None)
        self._gates_and_timers(p, view, db)
        if not live:
            return []  # restored records: counted by whoever processed them first
        ended = []
        # Summed per label first: a labelled child's lookup costs more than the count.
        started: dict[str, int] = {}
        ends: dict[tuple[str, str], int] = {}
        for change in changes:
            if change.started:
                started[change.fn_id] = started.get(change.fn_id, 0) + 1
            if change.ended is not None:
                key = (change.fn_id, change.ended)
                ends[key] = ends.get(key, 0) + 1
                if change.duration_s is not None:
                    self._child(self.duration, (change.fn_id,)).observe(change.duration_s)
                    if change.state is not None:
                        ended.append(change.state)
        for fn_id, n in started.items():
            self._child(self.started, (fn_id,)).inc(n)
        for labels, n in ends.items():
            self._child(self.ended, labels).inc(n)
        return ended

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        child = self._children.get((id(metric), labels))
        if child is None:
            child = self._children[(id(metric), labels)] = metric.labels(*labels)
        return child

    def _gates_and_timers(self, p: int, view: Any, db: Any) -> None:
        timers = 0
        opened, closed = [], []
        # Most keys a batch writes are neither (runs' event index, dedupe keys): their
        # two-byte table prefix says so at once.
        timer, gate, n = keys.TIMER, keys.GATE, len(keys.TIMER)
        for key, value in view.puts.items():
            head = key[:n]
            if head == timer:
                timers += db.get(key) is None
            elif head == gate:
                for prefix, kind in _GATE_PREFIXES:
                    if key.startswith(prefix) and (fn := _gate_fn(value)) is not None:
                        opened.append((key, fn, kind))
        for key in view.deletes:
            head = key[:n]
            if head == timer:
                timers -= db.get(key) is not None
            elif head == gate:
                closed.append(key)
        if timers:
            self.tally.timers_changed(p, timers)
        if opened or closed:
            self.tally.gates_changed(p, opened, closed)

    def dead_letter(self, d: DeadLetter) -> None:
        if self.enabled:
            self.dead.labels(_short_topic(d.source_topic), reason_class(d.reason)).inc()

    # --- scrape (any thread) ---------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _scan(store: PartitionStore, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) under ``prefix``, read past the block cache: one pass over a
    partition's whole state must not evict the blocks the fold and timers keep hot."""
    options = ReadOptions()
    options.fill_cache(False)  # type: ignore[call-arg]  # the stub lacks its argument
    it = store.db.iter(options)
    it.seek(prefix)
    while it.valid():
        key = it.key()
        if not key.startswith(prefix):
            break
        yield key, it.value()
        it.next()
    it.status()


def _gate_fn(raw: bytes) -> str | None:
    try:
        gate = unpack(raw)
        fn = gate["request"]["fn_id"]
    except Exception:  # a gate of another shape: not counted, never an error here
        return None
    return fn if isinstance(fn, str) else None


def _short_topic(topic: str) -> str:
    """``events`` for ``{prefix}events``: labels stay the same whatever the prefix."""
    return topic.rsplit(".", 1)[-1] if topic else "unknown"


class _Gauges(Collector):
    """The gauges, computed at scrape time from the tallies (a copy of a few small dicts)
    and the lag meter's last sample."""

    def __init__(self, tally: RunTally,
                 lag: Callable[[], Iterable[tuple[str, int, int | None]]]) -> None:
        self.tally = tally
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        waiting, timers = self.tally.snapshot()
        backlog = GaugeMetricFamily(
            "stepstream_worker_backlog",
            "Runs whose next task is handed to workers and not reported yet (queued in "
            "tasks or running on a worker), per function: the signal to scale workers on.",
            labels=["function"])
        runs = GaugeMetricFamily("stepstream_runs_waiting",
                                 "Runs not ended, per function and what they wait for.",
                                 labels=["function", "reason"])
        for (fn_id, reason), n in sorted(waiting.items()):
            runs.add_metric([fn_id, reason], n)
            if reason == WORKER:
                backlog.add_metric([fn_id], n)
        pending = GaugeMetricFamily("stepstream_timers_pending",
                                    "Timers in the runs partitions this engine owns.",
                                    labels=["partition"])
        for p, n in sorted(timers.items()):
            pending.add_metric([str(p)], n)
        lag = GaugeMetricFamily("stepstream_consumer_lag",
                                "Records of an input partition not processed yet.",
                                labels=["topic", "partition"])
        for topic, p, value in self.lag():
            if value is not None:
                lag.add_metric([topic, str(p)], value)
        yield from (backlog, runs, pending, lag)
