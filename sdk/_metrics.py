"""A worker's Prometheus metrics, served on ``--metrics-port`` (README, "Metrics").

Counted where the worker already is: a task taken from the consumer, a pass begun, the
outcomes an execution produced (each ``step.completed``/``step.failed`` is one step
attempt, with its start and end times)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from topics import records

log = logging.getLogger("stepstream.worker")

STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_STEP_OPS = (records.STEP_COMPLETED, records.STEP_FAILED)


class MetricsPortError(OSError):
    """The metrics port could not be listened on. ``exit_code`` is what ``stepstream
    worker`` exits with."""

    exit_code = 2


class WorkerMetrics:
    """The metrics of one worker; ``slots_in_use`` is read at each scrape."""

    def __init__(self, concurrency: int, slots_in_use: Callable[[], int]) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.steps = Counter("stepstream_worker_steps", "Step attempts executed.",
                             ["function", "step"], registry=r)
        self.failed = Counter("stepstream_worker_steps_failed",
                              "Step attempts that raised (retried or not).",
                              ["function", "step"], registry=r)
        self.duration = Histogram("stepstream_worker_step_duration_seconds",
                                  "How long a step attempt ran.", ["function", "step"],
                                  buckets=STEP_BUCKETS, registry=r)
        self.tasks = Counter("stepstream_worker_tasks_received",
                             "Tasks taken from the tasks topic for this app.", registry=r)
        self.cancellations = Counter(
            "stepstream_worker_task_cancellations_received",
            "task.cancelled records received for this app: a run ended while its task was "
            "out, so that task stops running ahead.", registry=r)
        self.passes = Counter("stepstream_worker_passes",
                              "Passes run: a task executed until it waits or ends.",
                              ["function"], registry=r)
        in_use = Gauge("stepstream_worker_slots_in_use", "Tasks running now.", registry=r)
        in_use.set_function(lambda: float(slots_in_use()))
        total = Gauge("stepstream_worker_slots", "Tasks this worker runs at once at most "
                      "(its concurrency).", registry=r)
        total.set(concurrency)
        self._server: Any = None
        self._thread: Any = None

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: a free port) from a thread; the port."""
        try:
            self._server, self._thread = start_http_server(port, host, self.registry)
        except OSError as exc:
            raise MetricsPortError(f"cannot serve worker metrics on {host}:{port}: "
                                   f"{exc.strerror or exc}") from None
        bound = int(self._server.server_port)
        log.info("worker metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def outcomes(self, fn_id: str, outcomes: Iterable[records.Outcome]) -> None:
        """Count the step attempts among an execution's outcomes."""
        for o in outcomes:
            if o.op not in _STEP_OPS:
                continue
            step = o.name or o.step_id or ""
            self.steps.labels(fn_id, step).inc()
            if o.op == records.STEP_FAILED:
                self.failed.labels(fn_id, step).inc()
            if o.started_at is not None and o.ended_at is not None:
                self.duration.labels(fn_id, step).observe(max(0, o.ended_at - o.started_at)
                                                          / 1000)
