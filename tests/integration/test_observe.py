"""Metrics and traces end to end (README, "Metrics" and "Traces"): one in-process
engine with its HTTP API on a free port (API key required, as outside dev mode), and
one worker thread serving its metrics and tracing into an in-memory exporter."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

import sdk
from engine.observe.tracing import RunTracer
from tests.integration.harness import ServedApi, Stack, wait_for
from topics.ids import run_span_id_for, trace_id_for
from topics.settings import Settings

pytestmark = pytest.mark.kafka

KEY = "observe-key"
calls: Counter[str] = Counter()
lock = threading.Lock()


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="obs", settings=settings)

    @client.create_function(fn_id="ok", trigger=sdk.TriggerEvent(event="obs/ok"))
    async def ok(ctx: sdk.Context) -> int:
        return int(await ctx.step.run("work", lambda: 1))

    @client.create_function(fn_id="bad", retries=0, trigger=sdk.TriggerEvent(event="obs/bad"))
    async def bad(ctx: sdk.Context) -> None:
        def boom() -> None:
            raise ValueError("no")
        await ctx.step.run("boom", boom)

    @client.create_function(fn_id="waiter", trigger=sdk.TriggerEvent(event="obs/wait"))
    async def waiter(ctx: sdk.Context) -> Any:
        return await ctx.step.wait_for_event("reply", event="obs/never", timeout="1h")

    @client.create_function(fn_id="traced", retries=2,
                            trigger=sdk.TriggerEvent(event="obs/traced"))
    async def traced(ctx: sdk.Context) -> str:
        def flaky() -> str:
            with lock:
                calls[ctx.run_id] += 1
                n = calls[ctx.run_id]
            if n == 1:
                raise ConnectionError("first attempt fails")
            return "b"
        a = await ctx.step.run("a", lambda: "a")
        b = await ctx.step.run("b", flaky)
        c = await ctx.step.run("c", lambda: "c")
        return a + b + c

    return client


class Api(ServedApi):
    """The engine's HTTP API outside dev mode (keyed) on a free port."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack, dev=False, api_keys=frozenset({KEY}))


class Observed:
    def __init__(self, stack: Stack, api: Api, worker: Any, spans: InMemorySpanExporter
                 ) -> None:
        self.stack, self.api, self.worker, self.spans = stack, api, worker, spans


@pytest.fixture(scope="module")
def observed(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp: Path = tmp_path_factory.mktemp("observe")
    stack = Stack(broker, tmp, backoff_ms=100)
    spans = InMemorySpanExporter()
    client = None
    api = None
    try:
        engine = stack.start_engine()
        engine.processor.tracer = RunTracer(SimpleSpanProcessor(spans))
        api = Api(stack)
        client = make_client(stack.settings)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        worker = client.worker(concurrency=10, metrics_port=0, tracer_provider=provider)
        thread = threading.Thread(target=lambda: asyncio.run(worker.run_async()), daemon=True)
        thread.start()
        stack.workers.append((worker, thread))
        stack.client = client
        stack.wait_functions("obs-ok", "obs-bad", "obs-waiter", "obs-traced")
        assert worker.ready.wait(30)
        yield Observed(stack, api, worker, spans)
    finally:
        stack.close()
        if api is not None:
            api.close()
        if client is not None:
            client.close()


def get(url: str, key: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_metrics_count_what_happened(observed: Observed) -> None:
    stack, api = observed.stack, observed.api
    ok = [stack.send("obs/ok", {"n": i}) for i in range(3)]
    bad = stack.send("obs/bad", {})
    waiting = stack.send("obs/wait", {})
    assert [stack.finished_run(e)["status"] for e in ok] == ["completed"] * 3
    assert stack.finished_run(bad)["status"] == "failed"
    wait_for(lambda: ((stack.runs_for(waiting) or [{}])[0].get("waiting") or {}).get("kind")
             == "event", what="the waiter waiting for its event")

    assert get(f"{api.url}/metrics")[0] == 401  # outside dev mode, the API key

    def engine_counts() -> dict[Any, float] | None:
        status, text = get(f"{api.url}/metrics", KEY)
        assert status == 200, text
        found = samples(text)
        want = {("stepstream_runs_ended_total", "obs-ok", "completed"): 3.0,
                ("stepstream_runs_ended_total", "obs-bad", "failed"): 1.0}
        if any(value(found, name, function=fn, status=st) != n
               for (name, fn, st), n in want.items()):
            return None
        if value(found, "stepstream_runs_waiting", function="obs-waiter",
                 reason="event") != 1.0:
            return None
        lags = {labels for (name, labels) in found if name == "stepstream_consumer_lag"}
        if {dict(labels)["topic"] for labels in lags} != {"events", "runs", "waits"}:
            return None
        return found

    found = wait_for(engine_counts, what="the engine's metrics to show the runs")
    assert value(found, "stepstream_runs_started_total", function="obs-ok") == 3.0
    assert value(found, "stepstream_runs_started_total", function="obs-waiter") == 1.0
    assert value(found, "stepstream_run_duration_seconds_count", function="obs-ok") == 3.0
    assert (found[("stepstream_records_folded_total", frozenset({("topic", "runs")}))]
            > 0)
    # The waiter is held, not ended; the failed run is no longer held.
    assert value(found, "stepstream_runs_waiting", function="obs-bad", reason="worker") is None
    assert value(found, "stepstream_runs_ended_total", function="obs-waiter",
                 status="completed") is None
    # Its wait's timeout timer is pending on one partition.
    assert sum(v for (name, _l), v in found.items() if name == "stepstream_timers_pending") >= 1

    port = observed.worker.metrics_port
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    w = samples(text)
    assert value(w, "stepstream_worker_steps_total", function="obs-ok", step="work") == 3.0
    assert value(w, "stepstream_worker_steps_failed_total", function="obs-bad",
                 step="boom") == 1.0
    assert value(w, "stepstream_worker_step_duration_seconds_count", function="obs-ok",
                 step="work") == 3.0
    assert value(w, "stepstream_worker_slots") == 10.0
    assert value(w, "stepstream_worker_slots_in_use") is not None
    assert (value(w, "stepstream_worker_tasks_received_total") or 0) >= 5
    assert (value(w, "stepstream_worker_passes_total", function="obs-ok") or 0) >= 3


def test_one_trace_per_run_with_a_span_per_step_attempt(observed: Observed) -> None:
    stack = observed.stack
    event = stack.send("obs/traced", {})
    run = stack.finished_run(event)
    assert run["status"] == "completed" and run["output"] == "abc"
    run_id = run["run_id"]
    trace_id = int(trace_id_for(run_id), 16)
    root_id = int(run_span_id_for(run_id), 16)

    def trace() -> list[ReadableSpan] | None:
        mine = [s for s in observed.spans.get_finished_spans()
                if s.attributes and s.attributes.get("stepstream.run_id") == run_id]
        return mine if len(mine) == 5 else None

    spans = wait_for(trace, what="the run's root span and four step spans")
    assert {s.context.trace_id for s in spans} == {trace_id}
    [root] = [s for s in spans if s.parent is None]
    assert root.context.span_id == root_id and root.name == "run obs-traced"
    assert root.status.status_code == StatusCode.OK
    assert root.attributes is not None and root.attributes["stepstream.status"] == "completed"
    steps = sorted((s for s in spans if s is not root),
                   key=lambda s: (s.name, s.attributes["stepstream.attempt"]  # type: ignore[index]
                                  ))
    assert [(s.name, s.attributes["stepstream.attempt"], s.attributes["stepstream.status"])
            for s in steps if s.attributes] == [
        ("a", 0, "completed"), ("b", 0, "failed"), ("b", 1, "completed"), ("c", 0, "completed")]
    for s in steps:
        assert s.parent is not None and s.parent.span_id == root_id
        assert s.parent.trace_id == trace_id
        assert s.attributes and s.attributes["stepstream.function_id"] == "obs-traced"
        assert root.start_time is not None and s.start_time is not None
        assert root.start_time <= s.start_time
    assert steps[1].status.status_code == StatusCode.ERROR
    assert "first attempt fails" in str(steps[1].attributes["stepstream.error"])  # type: ignore[index]

    # The run's JSON names its trace.
    status, _text = get(f"{observed.api.url}/v1/runs/{run_id}", KEY)
    assert status == 200
    from engine.api.views import run_view
    assert run_view(stack.run(run_id) or {})["trace_id"] == trace_id_for(run_id)
