"""The router: events -> runs, by trigger name (``*`` wildcards) and CEL filter.

The registry is a global table built from the compacted ``functions`` topic; every
engine process holds all of it. Routing is pure given the registry: the run id is
derived from (function id, event id), so a re-delivered event requests the same run
and the run fold ignores the duplicate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from engine.expressions import (
    CompiledExpression,
    ExpressionError,
    PreparedEvent,
    TriggerMatcher,
    to_json,
)
from engine.fold import Emit
from engine.fold.core import event_body
from engine.runtime.flowkeys import NO_FLOW, FlowOptions, compile_flow, evaluate_flow
from topics.cron import CronSchedule, parse_cron
from topics.ids import dedupe_key_for, run_id_for
from topics.records import (
    FUNCTION_INVOKED,
    INTERNAL_PREFIX,
    LIFECYCLE_EVENTS,
    Event,
    FunctionRegistered,
    InvokeFinished,
    InvokeRequested,
    RerunRequested,
    RerunRunRequested,
    RunRequested,
)

log = logging.getLogger("stepstream.router")


@dataclass(frozen=True, slots=True)
class SourceTopic:
    """A topic functions trigger on: the event names each record becomes, and where
    reading starts the first time (``earliest`` if any trigger asks for it)."""

    events: tuple[str, ...]
    start: str


@dataclass(slots=True)
class RegisteredFunction:
    definition: FunctionRegistered
    matchers: list[TriggerMatcher]
    crons: list[CronSchedule]
    idempotency: CompiledExpression | None
    flow: FlowOptions = NO_FLOW


class Registry:
    """Function definitions by id, with their triggers compiled once."""

    def __init__(self) -> None:
        self.functions: dict[str, RegisteredFunction] = {}
        self.version = 0  # bumped on every change, for caches of derived facts
        # engine event name -> the triggers matching it by name
        self._engine_listeners: dict[str, list[TriggerMatcher]] = {}
        self._sources: tuple[int, dict[str, SourceTopic]] = (-1, {})

    def apply(self, rec: FunctionRegistered) -> None:
        """Add or replace a definition. A trigger that does not compile is skipped with
        an error in the log (the worker validated it; a bad one must not stop routing)."""
        matchers = []
        crons = []
        for trig in rec.triggers:
            cron = trig.get("cron")
            if isinstance(cron, str):
                try:
                    schedule = parse_cron(cron)
                    jitter = trig.get("jitter_ms")
                    if isinstance(jitter, int) and not isinstance(jitter, bool) and jitter > 0:
                        schedule.jitter_ms = jitter
                    crons.append(schedule)
                except ValueError as exc:
                    log.error("function %s: cron trigger %r skipped: %s", rec.fn_id, cron, exc)
                continue
            event = trig.get("event")
            if not isinstance(event, str):
                continue
            expression = trig.get("expression")
            try:
                matchers.append(TriggerMatcher(event, expression if isinstance(expression, str)
                                               else None))
            except ExpressionError as exc:
                log.error("function %s: trigger %r skipped: %s", rec.fn_id, event, exc)
        idempotency = None
        if rec.idempotency:
            try:
                idempotency = CompiledExpression(rec.idempotency)
            except ExpressionError as exc:
                log.error("function %s: idempotency key ignored: %s", rec.fn_id, exc)
        flow = compile_flow(rec.fn_id, getattr(rec, "flow", None))
        self.functions[rec.fn_id] = RegisteredFunction(rec, matchers, crons, idempotency, flow)
        self.version += 1
        self._engine_listeners.clear()

    def remove(self, fn_id: str) -> None:
        self.functions.pop(fn_id, None)
        self.version += 1
        self._engine_listeners.clear()

    def sources(self) -> dict[str, SourceTopic]:
        """The topics stepstream does not own that functions trigger on
        (``sdk.TriggerTopic``), with the event names their records become."""
        version, cached = self._sources
        if version == self.version:
            return cached
        found: dict[str, SourceTopic] = {}
        for fn in self.functions.values():
            for trig in fn.definition.triggers:
                topic, event = trig.get("topic"), trig.get("event")
                if not isinstance(topic, str) or not isinstance(event, str):
                    continue
                have = found.get(topic, SourceTopic((), "latest"))
                start = "earliest" if trig.get("start") != "latest" else have.start
                found[topic] = SourceTopic(tuple(sorted({*have.events, event})), start)
        self._sources = (self.version, found)
        return found

    def triggers_on_engine_event(self, event: Event) -> bool:
        """Whether :func:`route` would start a run for the engine event ``event``
        (``stepstream/...``): a trigger naming ``stepstream/...`` (never a bare ``*``)
        matches its name and CEL filter. The triggers matching a name are cached, so an
        event no trigger names costs one dictionary lookup."""
        matchers = self._engine_listeners.get(event.name)
        if matchers is None:
            matchers = [m for fn in self.functions.values() for m in fn.matchers
                        if m.event.startswith(INTERNAL_PREFIX) and m.name_matches(event.name)]
            self._engine_listeners[event.name] = matchers
        if not matchers:
            return False
        prepared = PreparedEvent(event_body(event))
        return any(m.matches(prepared) for m in matchers)


def route(event: Event, registry: Registry, *, now_ms: int, backoff_base_ms: int,
          source: dict[str, Any] | None = None) -> list[RunRequested]:
    """The runs an event starts: one per function with a matching trigger.

    Engine events (``stepstream/...``) only match triggers that name them
    (``stepstream/...``), never a bare ``*``, and runs they trigger send no
    ``function.*`` events of their own, so listening to them cannot loop. ``source``
    (an event made from a record of a source topic) rides along in the run's event.
    """
    body = event_body(event)
    if source is not None:
        body = {**body, "source": source}
    prepared = PreparedEvent(body)
    internal = event.name.startswith(INTERNAL_PREFIX)
    out = []
    for fn_id, fn in registry.functions.items():
        if not any(m.matches(prepared) and (not internal or m.event.startswith(INTERNAL_PREFIX))
                   for m in fn.matchers):
            continue
        out.append(request_for(fn, body, run_id=run_id_for(fn_id, event.id, event.ts),
                               dedupe_key=_dedupe_key(fn, prepared, event.id),
                               now_ms=now_ms, backoff_base_ms=backoff_base_ms,
                               lifecycle_events=event.name not in LIFECYCLE_EVENTS,
                               flow=evaluate_flow(fn_id, fn.flow, prepared)))
    return out


def _dedupe_key(fn: RegisteredFunction, prepared: PreparedEvent, event_id: str) -> str:
    """At most one run per key per window: the function's idempotency value if it has
    one (and it evaluates), else the event id."""
    fn_id = fn.definition.fn_id
    if fn.idempotency is not None:
        try:
            value = to_json(fn.idempotency.evaluate({"event": prepared.cel()}, converted=True))
        except Exception as exc:  # CEL evaluation error: fall back to the event id
            log.warning("function %s: idempotency key did not evaluate (%s); deduplicating "
                        "by event id", fn_id, exc)
        else:
            return dedupe_key_for(fn_id, "key", json.dumps(value, sort_keys=True))
    return dedupe_key_for(fn_id, "event", event_id)


def request_for(fn: RegisteredFunction, event: dict[str, Any], *, run_id: str,
                dedupe_key: str, now_ms: int, backoff_base_ms: int,
                parent: dict[str, Any] | None = None, cron: dict[str, Any] | None = None,
                partition_key: str | None = None,
                lifecycle_events: bool = True,
                flow: dict[str, Any] | None = None) -> RunRequested:
    """The RunRequested for one run of ``fn``; everything the run's fold needs from the
    function's definition is copied in, so replay never consults the registry.

    Where it goes: runs sharing a dedupe key share a partition, where the key is held;
    with flow control the run lives where its gates are (``flow["home"]``). With both an
    idempotency key and gates, the request goes to the dedupe key's partition first,
    which forwards it home once the key is held (engine/fold/requested.py)."""
    d = fn.definition
    home = flow.get("home") if flow else None
    if partition_key is None:
        partition_key = home if home and fn.idempotency is None else dedupe_key
    return RunRequested(
        run_id=run_id, fn_id=d.fn_id, app_id=d.app_id,
        partition_key=partition_key,
        event=event, events=[event], retries=d.retries, backoff_base_ms=backoff_base_ms,
        ts=now_ms, dedupe_key=dedupe_key, parent=parent, cancel=list(d.cancel or []),
        timeouts=d.timeouts, cron=cron, lifecycle_events=lifecycle_events, flow=flow,
    )


def route_invoke(rec: InvokeRequested, registry: Registry, *, now_ms: int,
                 backoff_base_ms: int) -> list[Emit]:
    """A parent's ``step.invoke``: the child run, or the parent told there is none."""
    fn = registry.functions.get(rec.fn_id)
    parent = rec.parent
    if fn is None:
        if not parent:
            # Started from the API (no parent run to tell), which checked the function
            # exists; it was removed since. Nothing waits for an answer.
            return []
        error = {"name": "FunctionNotFound",
                 "message": f"no function {rec.fn_id!r} is registered", "stack": ""}
        return [Emit("runs", str(parent["partition_key"]), InvokeFinished(
            run_id=str(parent["run_id"]), step_id=str(parent["step_id"]),
            child_run_id=run_id_for(rec.fn_id, rec.event_id, rec.ts), output=None,
            error=error, ts=now_ms))]
    event: dict[str, Any] = {"name": FUNCTION_INVOKED, "data": rec.data, "id": rec.event_id,
                             "ts": rec.ts}
    if rec.event_version is not None:
        event["v"] = rec.event_version
    req = request_for(fn, event, run_id=run_id_for(rec.fn_id, rec.event_id, rec.ts),
                      dedupe_key=dedupe_key_for(rec.fn_id, "event", rec.event_id), now_ms=now_ms,
                      backoff_base_ms=backoff_base_ms, parent=dict(parent) or None,
                      flow=evaluate_flow(rec.fn_id, fn.flow, PreparedEvent(event)))
    return [Emit("runs", req.partition_key, req)]


def route_rerun(rec: RerunRequested, registry: Registry, *, now_ms: int,
                backoff_base_ms: int) -> RerunRunRequested | str:
    """A re-run (docs/architecture.md, "Re-run"): the new run's request, built from the
    function's current definition with its flow keys evaluated here like any run's, or
    why there is none (the function was removed since the API accepted it).

    A batch or debounce does not apply (the run has its events already), nor a dedupe
    key (a re-run is explicit). The run lives at its flow-control home if it has one,
    else on a partition derived from its own id."""
    fn = registry.functions.get(rec.fn_id)
    if fn is None:
        return (f"re-run {rec.run_id} of run {rec.rerun_of}: no function {rec.fn_id!r} is "
                f"registered (removed since the re-run was accepted)")
    flow = evaluate_flow(rec.fn_id, fn.flow, PreparedEvent(rec.event))
    if flow is not None:
        flow = {k: v for k, v in flow.items() if k not in ("batch", "debounce")} or None
    home = flow.get("home") if flow else None
    req = request_for(fn, rec.event, run_id=rec.run_id,
                      dedupe_key=dedupe_key_for(rec.fn_id, "rerun", rec.run_id),
                      now_ms=now_ms, backoff_base_ms=backoff_base_ms, cron=rec.cron,
                      partition_key=home if isinstance(home, str) else dedupe_key_for(
                          rec.fn_id, "rerun", rec.run_id),
                      lifecycle_events=rec.event.get("name") not in LIFECYCLE_EVENTS,
                      flow=flow)
    fields = asdict(req)
    fields.update(events=list(rec.events) or [rec.event], dedupe_key=None)
    return RerunRunRequested(**fields, rerun={
        "of": rec.rerun_of, "of_key": rec.rerun_of_key, "from_step": rec.from_step,
        "kept": rec.kept, "kept_order": rec.kept_order})
