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
class RateOption:
    """A throttle (``burst`` >= 1) or a rate limit (``burst`` None)."""

    limit: int
    period_ms: int
    key: CompiledExpression | None
    burst: int | None


@dataclass(frozen=True, slots=True)
class SingletonOption:
    key: CompiledExpression | None
    mode: str  # "skip" or "cancel"


@dataclass(frozen=True, slots=True)
class BatchOption:
    max_size: int
    timeout_ms: int
    key: CompiledExpression | None
    if_exp: CompiledExpression | None


@dataclass(frozen=True, slots=True)
class DebounceOption:
    period_ms: int
    key: CompiledExpression | None
    timeout_ms: int | None
    collect: bool


@dataclass(frozen=True, slots=True)
class FlowOptions:
    """A function's flow-control options with their expressions compiled once.

    ``home``: the expression whose value places every run of the function (None: the
    function id itself, one partition for all its runs) and its scope; see
    :func:`home_rule`."""

    concurrency: tuple[ConcurrencyOption, ...] = ()
    throttle: RateOption | None = None
    rate_limit: RateOption | None = None
    singleton: SingletonOption | None = None
    priority: CompiledExpression | None = None
    home: tuple[str, CompiledExpression | None] = ("fn", None)
    batch: BatchOption | None = None
    debounce: DebounceOption | None = None

    @property
    def empty(self) -> bool:
        return not self.gated and self.priority is None

    @property
    def gated(self) -> bool:
        """Whether any option keeps state (all but priority)."""
        return bool(self.concurrency or self.throttle or self.rate_limit or self.singleton
                    or self.batch or self.debounce)


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
    throttle = _rate(fn_id, "throttle", flow.get("throttle"), throttle=True)
    rate_limit = _rate(fn_id, "rate_limit", flow.get("rate_limit"), throttle=False)
    singleton = None
    if isinstance(flow.get("singleton"), dict):
        try:
            mode = flow["singleton"].get("mode")
            if mode not in ("skip", "cancel"):
                raise ValueError(f"mode {mode!r}")
            singleton = SingletonOption(_compile(flow["singleton"].get("key")), str(mode))
        except (ValueError, ExpressionError) as exc:
            log.error("function %s: singleton skipped: %s", fn_id, exc)
    priority = None
    run = (flow.get("priority") or {}).get("run")
    if run:
        try:
            priority = _compile(run)
        except ExpressionError as exc:
            log.error("function %s: priority ignored: %s", fn_id, exc)
    limits_t = tuple(limits)
    batch, debounce = _batch(fn_id, flow.get("batch")), _debounce(fn_id, flow.get("debounce"))
    if any(o.scope == "env" for o in limits_t) and (
            len(limits_t) > 1 or throttle or rate_limit or singleton or batch or debounce):
        # The SDK refuses this (ConfigError): an env gate is shared across functions, so
        # it cannot live on this function's partition with the others.
        log.error("function %s: an env-scoped concurrency limit cannot be combined with "
                  "other flow-control options; only it is enforced", fn_id)
        limits_t = tuple(o for o in limits_t if o.scope == "env")[:1]
        throttle = rate_limit = singleton = None
        batch = debounce = None
    options = FlowOptions(limits_t, throttle, rate_limit, singleton, priority,
                          batch=batch, debounce=debounce)
    return FlowOptions(limits_t, throttle, rate_limit, singleton, priority,
                       home_rule(options), batch, debounce)


def _batch(fn_id: str, item: Any) -> BatchOption | None:
    if not isinstance(item, dict):
        return None
    try:
        max_size, timeout_ms = int(item["max_size"]), int(item["timeout_ms"])
        if max_size < 1 or timeout_ms < 1:
            raise ValueError("max_size and timeout must be >= 1")
        return BatchOption(max_size, timeout_ms, _compile(item.get("key")),
                           _compile(item.get("if_exp")))
    except (KeyError, TypeError, ValueError, ExpressionError) as exc:
        log.error("function %s: batch_events %r skipped: %s", fn_id, item, exc)
        return None


def _debounce(fn_id: str, item: Any) -> DebounceOption | None:
    if not isinstance(item, dict):
        return None
    try:
        period_ms = int(item["period_ms"])
        timeout = item.get("timeout_ms")
        if period_ms < 1 or (timeout is not None and int(timeout) < 1):
            raise ValueError("period and timeout must be >= 1")
        return DebounceOption(period_ms, _compile(item.get("key")),
                              None if timeout is None else int(timeout),
                              bool(item.get("collect")))
    except (KeyError, TypeError, ValueError, ExpressionError) as exc:
        log.error("function %s: debounce %r skipped: %s", fn_id, item, exc)
        return None


def _rate(fn_id: str, name: str, item: Any, *, throttle: bool) -> RateOption | None:
    if not isinstance(item, dict):
        return None
    try:
        limit, period_ms = int(item["limit"]), int(item["period_ms"])
        if limit < 1 or period_ms < 1:
            raise ValueError("limit and period must be >= 1")
        burst = max(1, int(item.get("burst") or 1)) if throttle else None
        return RateOption(limit, period_ms, _compile(item.get("key")), burst)
    except (KeyError, TypeError, ValueError, ExpressionError) as exc:
        log.error("function %s: %s %r skipped: %s", fn_id, name, item, exc)
        return None


def home_rule(options: FlowOptions) -> tuple[str, CompiledExpression | None]:
    """Which partition a function's runs live on, so that every gate they use is on it
    (docs/architecture.md, "Flow control"): a gate's holders and backlog are then one
    processor's table, and a claim needs no lock and no message.

    - an env-scoped concurrency key (the only option then): ``env/{value}``;
    - every keyed option uses the same key expression and none is function-wide:
      ``{fn}/{value}``, so keys spread over partitions;
    - else (a function-wide option, or two different key expressions): the function id,
      one partition for all the function's runs — exact, bounded by one partition.
    """
    keyed: list[tuple[str, CompiledExpression | None]] = [
        (o.scope, o.key) for o in options.concurrency]
    for rate in (options.throttle, options.rate_limit):
        if rate is not None:
            keyed.append(("fn", rate.key))
    if options.singleton is not None:
        keyed.append(("fn", options.singleton.key))
    for gathered in (options.batch, options.debounce):
        if gathered is not None:
            keyed.append(("fn", gathered.key))
    if not keyed:
        return ("fn", None)
    scope, first = keyed[0]
    if first is not None and all(k is not None and k.source == first.source and s == scope
                                 for s, k in keyed):
        return (scope, first)
    return ("fn", None)


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
    """The run's gates for one event; None without flow control::

        {"home": partition key, "priority": seconds,
         "concurrency": [{"gate", "limit", "mode", "key", "scope"}],
         "throttle": {"gate", "limit", "period_ms", "burst", "key"},
         "rate_limit": {"gate", "limit", "period_ms", "key"},
         "singleton": {"gate", "mode", "key"}}

    Each key expression is evaluated once per event (the same source gives the same
    value)."""
    if options.empty:
        return None
    values: dict[str, str] = {}

    def value_of(expression: CompiledExpression | None) -> str | None:
        if expression is None:
            return None
        if expression.source not in values:
            values[expression.source] = key_value(fn_id, expression, prepared)
        return values[expression.source]

    flow: dict[str, Any] = {}
    if options.gated:
        scope, expression = options.home
        flow["home"] = gate_key(fn_id, scope, value_of(expression))
    if options.concurrency:
        gates: list[dict[str, Any]] = []
        for i, option in enumerate(options.concurrency):
            value = value_of(option.key)
            gate = gate_key(fn_id, option.scope, value)
            if i and option.key is not None and option.scope == "fn" and any(
                    g["gate"] == gate for g in gates):
                # Two keyed limits whose different expressions gave the same value: two
                # gates still (their runs all live on the function's partition then).
                gate += "#2"
            gates.append({"gate": gate,
                          "limit": option.limit, "mode": option.mode, "key": value,
                          "scope": option.scope})
        flow["concurrency"] = gates
    for name in ("throttle", "rate_limit"):
        rate: RateOption | None = getattr(options, name)
        if rate is not None:
            value = value_of(rate.key)
            flow[name] = {"gate": gate_key(fn_id, "fn", value), "limit": rate.limit,
                          "period_ms": rate.period_ms, "key": value}
            if rate.burst is not None:
                flow[name]["burst"] = rate.burst
    if options.singleton is not None:
        value = value_of(options.singleton.key)
        flow["singleton"] = {"gate": gate_key(fn_id, "fn", value),
                             "mode": options.singleton.mode, "key": value}
    if options.batch is not None and _holds(fn_id, options.batch.if_exp, prepared):
        # An event for which if_exp is false (or not a boolean) runs alone, at once.
        value = value_of(options.batch.key)
        flow["batch"] = {"gate": gate_key(fn_id, "fn", value),
                         "max_size": options.batch.max_size,
                         "timeout_ms": options.batch.timeout_ms, "key": value}
    if options.debounce is not None:
        value = value_of(options.debounce.key)
        flow["debounce"] = {"gate": gate_key(fn_id, "fn", value),
                            "period_ms": options.debounce.period_ms,
                            "timeout_ms": options.debounce.timeout_ms,
                            "collect": options.debounce.collect, "key": value}
    if options.priority is not None:
        flow["priority"] = priority_s(fn_id, options.priority, prepared)
    return flow


def _holds(fn_id: str, expression: CompiledExpression | None, prepared: PreparedEvent
           ) -> bool:
    if expression is None:
        return True
    try:
        value = expression.evaluate({"event": prepared.cel()}, converted=True)
    except Exception as exc:  # a CEL evaluation error: the event is not batched
        log.warning("function %s: batch if_exp %r did not evaluate (%s)", fn_id,
                    expression.source, exc)
        return False
    return to_json(value) is True


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
