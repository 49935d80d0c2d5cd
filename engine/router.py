"""The router: events -> runs, by trigger name (``*`` wildcards) and CEL filter.

The registry is a global table built from the compacted ``functions`` topic; every
engine process holds all of it. Routing is pure given the registry: the run id is
derived from (function id, event id), so a re-delivered event requests the same run
and the run fold ignores the duplicate.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from engine.expressions import ExpressionError, PreparedEvent, TriggerMatcher
from topics.ids import run_id_for
from topics.records import Event, FunctionRegistered, RunRequested

log = logging.getLogger("stepstream.router")


@dataclass(slots=True)
class RegisteredFunction:
    definition: FunctionRegistered
    matchers: list[TriggerMatcher]


class Registry:
    """Function definitions by id, with their triggers compiled once."""

    def __init__(self) -> None:
        self.functions: dict[str, RegisteredFunction] = {}

    def apply(self, rec: FunctionRegistered) -> None:
        """Add or replace a definition. A trigger that does not compile is skipped with
        an error in the log (the worker validated it; a bad one must not stop routing)."""
        matchers = []
        for trig in rec.triggers:
            event = trig.get("event")
            if not isinstance(event, str):
                continue  # a cron or other non-event trigger: not routed from events
            expression = trig.get("expression")
            try:
                matchers.append(TriggerMatcher(event, expression if isinstance(expression, str)
                                               else None))
            except ExpressionError as exc:
                log.error("function %s: trigger %r skipped: %s", rec.fn_id, event, exc)
        self.functions[rec.fn_id] = RegisteredFunction(rec, matchers)

    def remove(self, fn_id: str) -> None:
        self.functions.pop(fn_id, None)


def route(event: Event, registry: Registry, *, now_ms: int, backoff_base_ms: int
          ) -> list[RunRequested]:
    """The runs an event starts: one per function with a matching trigger."""
    body = asdict(event)
    prepared = PreparedEvent(body)
    out = []
    for fn_id, fn in registry.functions.items():
        if not any(m.matches(prepared) for m in fn.matchers):
            continue
        run_id = run_id_for(fn_id, event.id, event.ts)
        out.append(RunRequested(
            run_id=run_id, fn_id=fn_id, app_id=fn.definition.app_id,
            # One run per partition key for now; flow control will key runs that share
            # a concurrency key together (see docs/architecture.md).
            partition_key=run_id,
            event=body, events=[body], retries=fn.definition.retries,
            backoff_base_ms=backoff_base_ms, ts=now_ms,
        ))
    return out
