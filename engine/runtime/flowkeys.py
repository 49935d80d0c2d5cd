"""Flow control at the router: a function's options, evaluated for one event, become the
run's gates (``RunRequested.flow``) and choose the partition the run lives on.

The router evaluates every key expression (CEL over the trigger event) once, when it
requests the run, so the fold never evaluates CEL and replay needs no registry. See
docs/architecture.md, "Flow control", for the gates and the home partition.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from engine.expressions import CompiledExpression, ExpressionError, PreparedEvent, to_json

log = logging.getLogger("stepstream.router")

# Priority is seconds a run moves ahead (+) or behind (-) in a backlog, clipped like
# Inngest's.
PRIORITY_LIMIT_S = 600


@dataclass(frozen=True, slots=True)
class ConcurrencyOption:
    limit: int
    key: CompiledExpression | None
    scope: str  # "fn" or "env" ("account" arrives as "env")
    mode: str  # "step" or "run"


@dataclass(frozen=True, slots=True)
class FlowOptions:
    """A function's flow-control options with their expressions compiled once."""

    concurrency: tuple[ConcurrencyOption, ...] = ()
    priority: CompiledExpression | None = None

    @property
    def empty(self) -> bool:
        return not self.concurrency and self.priority is None


NO_FLOW = FlowOptions()


def compile_flow(fn_id: str, flow: dict[str, Any] | None) -> FlowOptions:
    """The options of a ``function.registered`` record's ``flow`` field. An option that
    does not compile is skipped with an error in the log: the worker validated it, and a
    bad definition must not stop routing."""
    if not flow:
        return NO_FLOW
    limits = []
    for item in flow.get("concurrency") or ():
        try:
            limit = int(item["limit"])
            key = _compile(item.get("key"))
        except (KeyError, TypeError, ValueError, ExpressionError) as exc:
            log.error("function %s: concurrency limit %r skipped: %s", fn_id, item, exc)
            continue
        scope = "env" if item.get("scope") in ("env", "account") else "fn"
        if scope == "env" and key is None:
            log.error("function %s: an env-scoped concurrency limit needs a key; skipped",
                      fn_id)
            continue
        mode = "run" if item.get("mode") == "run" else "step"
        limits.append(ConcurrencyOption(max(1, limit), key, scope, mode))
    priority = None
    run = (flow.get("priority") or {}).get("run")
    if run:
        try:
            priority = _compile(run)
        except ExpressionError as exc:
            log.error("function %s: priority ignored: %s", fn_id, exc)
    return FlowOptions(tuple(limits), priority)


def _compile(source: Any) -> CompiledExpression | None:
    if source is None or source == "":
        return None
    return CompiledExpression(str(source))


def key_value(fn_id: str, expression: CompiledExpression, prepared: PreparedEvent) -> str:
    """A key expression's value for one event, as a string. One that fails to evaluate
    gives "" (every such run shares that key), as Inngest does; logged."""
    try:
        value = to_json(expression.evaluate({"event": prepared.cel()}, converted=True))
    except Exception as exc:  # a CEL evaluation error: a missing field, a type mismatch
        log.warning("function %s: key %r did not evaluate (%s); using \"\"", fn_id,
                    expression.source, exc)
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def gate_key(fn_id: str, scope: str, value: str | None) -> str:
    """The partition key of a gate: the function, the function and a key value, or (env
    scope) the key value shared by every function that uses it."""
    if scope == "env":
        return f"env/{value}"
    return fn_id if value is None else f"{fn_id}/{value}"


def evaluate_flow(fn_id: str, options: FlowOptions, prepared: PreparedEvent
                  ) -> dict[str, Any] | None:
    """The run's gates for one event: ``{"home": partition key, "concurrency": [{"gate",
    "limit", "mode", "key"}], "priority": seconds}``; None without flow control."""
    if options.empty:
        return None
    gates = []
    for option in options.concurrency:
        value = None if option.key is None else key_value(fn_id, option.key, prepared)
        gates.append({"gate": gate_key(fn_id, option.scope, value), "limit": option.limit,
                      "mode": option.mode, "key": value, "scope": option.scope})
    flow: dict[str, Any] = {"concurrency": gates, "home": home_of(fn_id, gates)}
    if options.priority is not None:
        flow["priority"] = priority_s(fn_id, options.priority, prepared)
    return flow


def home_of(fn_id: str, gates: list[dict[str, Any]]) -> str | None:
    """The partition key the run lives on: where its gates are local. A function-wide
    gate (no key) puts every run of the function on one partition, so each of its other
    function-scoped gates is local there too; else the first gate's key."""
    if not gates:
        return None
    for gate in gates:
        if gate["gate"] == fn_id:
            return fn_id
    return str(gates[0]["gate"])


def is_local(gate: dict[str, Any], home: str, fn_id: str) -> bool:
    """Whether a gate's state is on the run's home partition: every run that can claim
    it lives there."""
    return gate["gate"] == home or (home == fn_id and gate.get("scope", "fn") == "fn")


def priority_s(fn_id: str, expression: CompiledExpression, prepared: PreparedEvent) -> int:
    """The run's priority in seconds, clipped to ±600; 0 when it fails to evaluate or is
    not a number."""
    try:
        value = to_json(expression.evaluate({"event": prepared.cel()}, converted=True))
    except Exception as exc:
        log.warning("function %s: priority %r did not evaluate (%s); using 0", fn_id,
                    expression.source, exc)
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(-PRIORITY_LIMIT_S, min(PRIORITY_LIMIT_S, int(value)))
