"""One OpenTelemetry root span per run, emitted by the engine when the run ends.

The trace id and this span's id derive from the run id (:func:`topics.ids.trace_id_for`,
:func:`topics.ids.run_span_id_for`), so the spans workers emit for step attempts — on
other machines, earlier — name it as their parent without anyone telling them.
Exported over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; the exporter and the resource read the
other standard ``OTEL_*`` variables. Unset, nothing is imported and nothing runs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from topics.ids import run_span_id_for, trace_id_for

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.id_generator import IdGenerator

log = logging.getLogger("stepstream.tracing")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_configured(env: Mapping[str, str] = os.environ) -> bool:
    """Whether an OTLP endpoint is configured (and the SDK not disabled)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name) for name in ENDPOINT_VARS)


class RunTracer:
    """Emits the root span of each run that ends, into ``span_processor``'s pipeline
    (an OTLP batch exporter from :meth:`from_env`, or one a test gives)."""

    def __init__(self, span_processor: Any, service_name: str = "stepstream-engine") -> None:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider

        self._ids = _FixedIds()
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (read by Resource.create) win;
        # without a name there, the SDK's "unknown_service" gives way to ours.
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service_name}))
        self.provider = TracerProvider(resource=resource, id_generator=cast("IdGenerator", self._ids))
        self.provider.add_span_processor(span_processor)
        self.tracer = self.provider.get_tracer("stepstream.engine")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RunTracer | None:
        """A tracer exporting over OTLP/HTTP if an endpoint is configured, else None."""
        if not tracing_configured(env):
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        log.info("exporting run traces over OTLP to %s",
                 env.get(ENDPOINT_VARS[1]) or env.get(ENDPOINT_VARS[0]))
        return cls(BatchSpanProcessor(OTLPSpanExporter()))

    def run_ended(self, state: Mapping[str, Any]) -> None:
        """Emit the root span of the run ``state`` (ended): from its request to its end.
        Never raises: a trace is a report, and must not stop the processor."""
        try:
            self._emit(state)
        except Exception:
            log.warning("could not emit the span of run %s", state.get("run_id"),
                        exc_info=True)

    def _emit(self, state: Mapping[str, Any]) -> None:
        from opentelemetry.context import Context
        from opentelemetry.trace import Status, StatusCode

        run_id = state["run_id"]
        status = state["status"]
        error = state.get("error") or {}
        attributes = {"stepstream.run_id": run_id, "stepstream.function_id": state["fn_id"],
                      "stepstream.app_id": state.get("app_id") or "",
                      "stepstream.status": status,
                      "stepstream.attempt": int(state.get("attempt") or 0)}
        if error:
            attributes["stepstream.error"] = f"{error.get('name')}: {error.get('message')}"
        with self._ids.fixed(int(trace_id_for(run_id), 16), int(run_span_id_for(run_id), 16)):
            span = self.tracer.start_span(f"run {state['fn_id']}", context=Context(),
                                          attributes=attributes,
                                          start_time=int(state["requested_at"]) * 1_000_000)
        if status == "completed":
            span.set_status(Status(StatusCode.OK))
        elif status == "failed":
            span.set_status(Status(StatusCode.ERROR, attributes.get("stepstream.error")))
        span.end(end_time=int(state["ended_at"]) * 1_000_000)

    def shutdown(self) -> None:
        """Export what is queued (a few seconds at most) and stop."""
        self.provider.shutdown()


class _FixedIds:
    """Random ids, except inside :meth:`fixed`: there the run's derived ones. The SDK
    gives no other way to start a span with a chosen trace and span id."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self._random = RandomIdGenerator()
        self._local = threading.local()

    def fixed(self, trace_id: int, span_id: int) -> _Fixed:
        return _Fixed(self._local, trace_id, span_id)

    def generate_trace_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        return ids[0] if ids else self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        return ids[1] if ids else self._random.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return False


class _Fixed:
    def __init__(self, local: threading.local, trace_id: int, span_id: int) -> None:
        self.local, self.ids = local, (trace_id, span_id)

    def __enter__(self) -> None:
        self.local.ids = self.ids

    def __exit__(self, *exc: object) -> None:
        self.local.ids = None
