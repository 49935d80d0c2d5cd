"""OpenTelemetry spans for step attempts, one per attempt a worker ran.

Each span joins its run's trace: the trace id and the parent span id (the run's root
span, which the engine emits when the run ends) derive from the run id
(:func:`topics.ids.trace_id_for`), so workers on any machine need no coordination.
Exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, or into the ``TracerProvider`` given to
the worker (``client.worker(tracer_provider=...)``); otherwise nothing is imported."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from topics import records
from topics.ids import run_span_id_for, trace_id_for

log = logging.getLogger("stepstream.worker")

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class StepTracer:
    """Emits one span per step attempt into ``provider``."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("stepstream.worker")

    @classmethod
    def create(cls, provider: Any = None, env: Mapping[str, str] = os.environ
               ) -> StepTracer | None:
        """A tracer into ``provider``, else one exporting over OTLP if an endpoint is
        configured, else None."""
        if provider is not None:
            return cls(provider)
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or not any(
                env.get(name) for name in _ENDPOINT_VARS):
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (read by Resource.create) win;
        # without a name there, the SDK's "unknown_service" gives way to ours.
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "stepstream-worker"}))
        own = TracerProvider(resource=resource)
        own.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(own)

    def outcomes(self, task: records.Task, outcomes: Iterable[records.Outcome]) -> None:
        """A span for each step attempt among an execution's outcomes. Never raises."""
        try:
            self._spans(task, outcomes)
        except Exception:
            log.warning("could not emit step spans of run %s", task.run_id, exc_info=True)

    def _spans(self, task: records.Task, outcomes: Iterable[records.Outcome]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

        parent = trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(
            trace_id=int(trace_id_for(task.run_id), 16),
            span_id=int(run_span_id_for(task.run_id), 16),
            is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
        for o in outcomes:
            if o.op not in (records.STEP_COMPLETED, records.STEP_FAILED) or o.started_at is None:
                continue
            step_id = o.step_id or ""
            failed = o.op == records.STEP_FAILED
            attributes: dict[str, Any] = {
                "stepstream.function_id": task.fn_id, "stepstream.run_id": task.run_id,
                "stepstream.step_id": step_id,
                "stepstream.attempt": int(task.step_attempts.get(step_id, 0)),
                "stepstream.status": "failed" if failed else "completed"}
            if failed and o.error:
                attributes["stepstream.error"] = f"{o.error.get('name')}: {o.error.get('message')}"
            span = self.tracer.start_span(o.name or step_id, context=parent,
                                          attributes=attributes,
                                          start_time=o.started_at * 1_000_000)
            span.set_status(Status(StatusCode.ERROR, attributes.get("stepstream.error"))
                            if failed else Status(StatusCode.OK))
            span.end(end_time=(o.ended_at or o.started_at) * 1_000_000)

    def shutdown(self) -> None:
        """Export what is queued; only a provider this tracer made is shut down."""
        try:
            self.provider.force_flush()
        except Exception:
            log.debug("flushing spans failed", exc_info=True)
