"""Flow-control options: concurrency, throttle, rate limit, priority, singleton,
batching and debounce.

Names, fields and limits follow Inngest's Python SDK 0.5 (batching and debounce: its
``Batch`` and ``Debounce``, with the bounds and combinations Inngest's server checks). The options only describe;
the engine enforces them (see "Flow control" in docs/architecture.md). Every check runs
in :meth:`FlowOptions.wire`, which ``create_function`` calls, so that each
:class:`~sdk.ConfigError` names the function and the field.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sdk._durations import Duration, duration_ms
from sdk._errors import ConfigError
from sdk._expressions import cel_problem

ConcurrencyScope = Literal["fn", "env", "account"]
ConcurrencyMode = Literal["step", "run"]
SingletonMode = Literal["skip", "cancel"]

# Inngest's bounds: a throttle period of 1 s to 7 days, a rate-limit period up to 24 h,
# at most two concurrency limits per function.
_SECOND_MS = 1000
THROTTLE_MAX_PERIOD_MS = 7 * 86_400_000
RATE_LIMIT_MAX_PERIOD_MS = 86_400_000
MAX_CONCURRENCY_LIMITS = 2
# A batch holds 2 to 100 events (a "batch" of one is not one; 100 is the open-source
# server's cap, Inngest Cloud's depends on the plan) and waits 1 s to 60 s; a debounce
# period is 1 s to 7 days. Inngest does not bound a debounce timeout; the same 7 days
# keeps a run from being deferred longer than a period could defer it.
BATCH_MIN_SIZE = 2
BATCH_MAX_SIZE = 100
BATCH_MAX_TIMEOUT_MS = 60_000
DEBOUNCE_MAX_PERIOD_MS = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most ``limit`` steps of the function executing at once (``mode="step"``,
    Inngest's meaning: a sleeping or waiting run holds no slot), or at most ``limit``
    runs in progress (``mode="run"``, stepstream's addition).

    ``key`` is CEL over ``event`` ("event.data.account_id"): one limit per value.
    ``scope="fn"`` counts this function's runs only; ``"env"`` (or ``"account"``, the
    same thing here: one stepstream cluster is one account) shares the limit with every
    function using the same key value, and needs a ``key``. A function takes at most
    two limits.
    """

    limit: int
    key: str | None = None
    scope: ConcurrencyScope = "fn"
    mode: ConcurrencyMode = "step"

    def wire(self, what: str) -> dict[str, Any]:
        """``{"limit", "key", "scope": "fn" | "env", "mode"}``; ``what`` names it in
        errors ("function 'f': concurrency[0]")."""
        limit = _at_least_one(self.limit, f"{what}.limit")
        key = _key(self.key, f"{what}.key")
        if self.scope not in ("fn", "env", "account"):
            raise ConfigError(f"{what}.scope must be 'fn', 'env' or 'account', "
                              f"got {self.scope!r}")
        if self.scope != "fn" and key is None:
            raise ConfigError(f"{what}.key is required with scope={self.scope!r}: it names "
                              "the shared limit, e.g. '\"openai\"' or 'event.data.account_id'")
        if self.mode not in ("step", "run"):
            raise ConfigError(f"{what}.mode must be 'step' or 'run', got {self.mode!r}")
        return {"limit": limit, "key": key,
                "scope": "fn" if self.scope == "fn" else "env", "mode": self.mode}


@dataclass(frozen=True, slots=True)
class Throttle:
    """At most ``limit`` run starts per ``period``, smoothed (GCRA): runs over it wait
    in a FIFO queue and start later; nothing is dropped. ``burst`` runs may start
    together. ``period`` is 1 s to 7 days (ms int, timedelta or "1m"); ``key`` is CEL
    over ``event``: one throttle per value.
    """

    limit: int
    period: Duration
    key: str | None = None
    burst: int | None = 1

    def wire(self, what: str) -> dict[str, Any]:
        """``{"limit", "period_ms", "key", "burst"}``."""
        return {"limit": _at_least_one(self.limit, f"{what}.limit"),
                "period_ms": _period_ms(self.period, f"{what}.period",
                                        THROTTLE_MAX_PERIOD_MS, "7d"),
                "key": _key(self.key, f"{what}.key"),
                "burst": 1 if self.burst is None else _at_least_one(self.burst,
                                                                    f"{what}.burst")}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` runs per ``period``; events over it start no run (the run is
    skipped, lossy, unlike :class:`Throttle`). ``period`` is 1 s to 24 h; ``key`` is CEL
    over ``event``: one limit per value.
    """

    limit: int
    period: Duration
    key: str | None = None

    def wire(self, what: str) -> dict[str, Any]:
        """``{"limit", "period_ms", "key"}``."""
        return {"limit": _at_least_one(self.limit, f"{what}.limit"),
                "period_ms": _period_ms(self.period, f"{what}.period",
                                        RATE_LIMIT_MAX_PERIOD_MS, "24h"),
                "key": _key(self.key, f"{what}.key")}


@dataclass(frozen=True, slots=True)
class Priority:
    """``run`` is CEL over ``event`` giving seconds (-600..600, clipped): a run queued
    behind a concurrency or throttle limit goes ahead of runs queued up to that many
    seconds before it (negative: behind). No effect when nothing is queued.
    ``Priority()`` (no ``run``) is no priority.
    """

    run: str | None = None

    def wire(self, what: str) -> dict[str, Any] | None:
        """``{"run"}``, or None without an expression."""
        if self.run is None:
            return None
        return {"run": _key(self.run, f"{what}.run")}


@dataclass(frozen=True, slots=True)
class Singleton:
    """At most one run in progress per ``key`` value (CEL over ``event``; without a key,
    one for the whole function). ``mode`` is required: ``"skip"`` starts no run while
    one is in progress; ``"cancel"`` cancels the one in progress and starts the new one.
    A retrying run is still in progress.
    """

    key: str | None = None
    mode: SingletonMode | None = None

    def wire(self, what: str) -> dict[str, Any]:
        """``{"key", "mode"}``."""
        if self.mode not in ("skip", "cancel"):
            raise ConfigError(f"{what}.mode must be 'skip' or 'cancel', got {self.mode!r}")
        return {"key": _key(self.key, f"{what}.key"), "mode": self.mode}


@dataclass(frozen=True, slots=True)
class Batch:
    """Runs take their events in batches: a batch opens on the first matching event and
    starts one run when it holds ``max_size`` events (2 to 100), when ``timeout`` (1 s
    to 60 s: ms int, timedelta or "5s") has passed since its first event, or when its
    events' data reaches 10 MiB. ``ctx.events`` holds the batch in accepted order and
    ``ctx.event`` is its first event.

    ``key`` is CEL over ``event``: one batch per value. ``if_exp`` is CEL over
    ``event``: an event for which it is false (or not a boolean) runs alone, at once.
    """

    max_size: int
    timeout: Duration
    key: str | None = None
    if_exp: str | None = None

    def wire(self, what: str) -> dict[str, Any]:
        """``{"max_size", "timeout_ms", "key", "if_exp"}``; ``what`` names it in errors
        ("function 'f': batch_events")."""
        size = self.max_size
        if isinstance(size, bool) or not isinstance(size, int) or not (
                BATCH_MIN_SIZE <= size <= BATCH_MAX_SIZE):
            raise ConfigError(f"{what}.max_size must be an int from {BATCH_MIN_SIZE} to "
                              f"{BATCH_MAX_SIZE}, got {size!r}")
        return {"max_size": size,
                "timeout_ms": _period_ms(self.timeout, f"{what}.timeout",
                                         BATCH_MAX_TIMEOUT_MS, "60s"),
                "key": _key(self.key, f"{what}.key"),
                "if_exp": _key(self.if_exp, f"{what}.if_exp")}


@dataclass(frozen=True, slots=True)
class Debounce:
    """A burst of events starts one run: each matching event restarts the wait, and the
    run starts ``period`` (1 s to 7 days) after the last one, with that event.
    ``timeout`` (1 s to 7 days) bounds the whole delay from the burst's first event: the
    run then starts with the latest event and a new debounce begins. ``key`` is CEL over
    ``event``: one debounce per value.

    ``collect=True`` (stepstream's addition, asked in inngest/inngest#3695) gives the
    run every event of the burst in ``ctx.events``, in accepted order; ``ctx.event`` is
    still the last one. Without it, ``ctx.events`` is ``[ctx.event]``.
    """

    period: Duration
    key: str | None = None
    timeout: Duration | None = None
    collect: bool = False

    def wire(self, what: str) -> dict[str, Any]:
        """``{"period_ms", "key", "timeout_ms", "collect"}``."""
        if not isinstance(self.collect, bool):
            raise ConfigError(f"{what}.collect must be True or False, "
                              f"got {self.collect!r}")
        return {"period_ms": _period_ms(self.period, f"{what}.period",
                                        DEBOUNCE_MAX_PERIOD_MS, "7d"),
                "key": _key(self.key, f"{what}.key"),
                "timeout_ms": None if self.timeout is None else _period_ms(
                    self.timeout, f"{what}.timeout", DEBOUNCE_MAX_PERIOD_MS, "7d"),
                "collect": self.collect}


@dataclass(frozen=True, slots=True)
class FlowOptions:
    """The flow-control arguments of one ``create_function`` call, as given."""

    concurrency: Any = None
    throttle: Any = None
    rate_limit: Any = None
    priority: Any = None
    singleton: Any = None
    batch_events: Any = None
    debounce: Any = None

    def __post_init__(self) -> None:
        # A tuple, as the frozen FunctionConfig holding this one must stay hashable.
        if isinstance(self.concurrency, list):
            object.__setattr__(self, "concurrency", tuple(self.concurrency))

    def wire(self, where: str) -> dict[str, Any] | None:
        """``FunctionRegistered.flow``: each option given, checked; None when there is
        none. ``where`` names the function ("function 'charge'") in errors."""
        out: dict[str, Any] = {}
        limits = _concurrency(self.concurrency, where)
        if limits:
            out["concurrency"] = limits
        # (argument, key in the record, class); batch_events is Inngest's argument name.
        for name, wire_key, cls in (
                ("throttle", "throttle", Throttle), ("rate_limit", "rate_limit", RateLimit),
                ("priority", "priority", Priority), ("singleton", "singleton", Singleton),
                ("batch_events", "batch", Batch), ("debounce", "debounce", Debounce)):
            option = getattr(self, name)
            if option is None:
                continue
            if not isinstance(option, cls):
                raise ConfigError(f"{where}: {name} must be sdk.{cls.__name__} or None, "
                                  f"got {type(option).__name__}")
            wired = option.wire(f"{where}: {name}")
            if wired is not None:
                out[wire_key] = wired
        if any(c["scope"] == "env" for c in out.get("concurrency", ())) and (
                len(out["concurrency"]) > 1
                or any(name in out for name in ("throttle", "rate_limit", "singleton",
                                                "batch", "debounce"))):
            # An env gate is shared with other functions, so it lives on the key's own
            # partition; this function's other gates live on the function's. Claiming
            # across partitions (remote gates) is not built: refuse rather than be inexact.
            raise ConfigError(f"{where}: concurrency with scope='env' cannot be "
                              "combined with another concurrency limit, throttle, "
                              "rate_limit, singleton, batch_events or debounce (not "
                              "supported yet)")
        return out or None


# What Inngest refuses together with batching: one run serves many events, so options
# that decide per event whether or when a run starts (idempotency, rate_limit, singleton,
# debounce), cancel one run by a matching event, or order runs by an event's data
# (priority) have no single event to apply to. Concurrency and throttle count runs, and
# combine.
_NOT_WITH_BATCHING = ("idempotency", "rate_limit", "cancel", "priority", "debounce",
                      "singleton")


def check_combinations(where: str, flow: dict[str, Any] | None, *,
                       idempotency: str | None, cancel: Sequence[object]) -> None:
    """Refuse what Inngest refuses with ``batch_events``, naming the function and every
    option in the way. ``flow`` is ``FunctionRegistered.flow`` as wired."""
    if not flow or "batch" not in flow:
        return
    given = {"idempotency": idempotency is not None, "cancel": bool(cancel)}
    clash = [name for name in _NOT_WITH_BATCHING if given.get(name, name in flow)]
    if clash:
        raise ConfigError(f"{where}: batch_events cannot be combined with "
                          f"{', '.join(clash)} (as in Inngest: one batch run serves many "
                          "events; batching combines with concurrency and throttle)")


def _concurrency(value: object, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, Concurrency):
        return [value.wire(f"{where}: concurrency")]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: concurrency must be sdk.Concurrency or a list of "
                          f"them, got {type(value).__name__}")
    if len(value) > MAX_CONCURRENCY_LIMITS:
        raise ConfigError(f"{where}: concurrency takes at most {MAX_CONCURRENCY_LIMITS} "
                          f"limits, got {len(value)}")
    limits: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, Concurrency):
            raise ConfigError(f"{where}: concurrency[{i}] must be sdk.Concurrency, "
                              f"got {type(item).__name__}")
        limits.append(item.wire(f"{where}: concurrency[{i}]"))
    # Two limits on the same scope and key would be one gate counted twice; Inngest
    # asks that limits sharing a scope have keys that differ.
    if len(limits) == 2 and (limits[0]["scope"], limits[0]["key"]) == (
            limits[1]["scope"], limits[1]["key"]):
        raise ConfigError(f"{where}: concurrency[0] and concurrency[1] have the same scope "
                          f"and key ({limits[0]['scope']!r}, {limits[0]['key']!r}); "
                          "give one limit, or keys that differ")
    return limits


def _at_least_one(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be an int >= 1, got {value!r}")
    return value


def _key(value: object, what: str) -> str | None:
    if value is None:
        return None
    problem = cel_problem(value)
    if problem is not None or not isinstance(value, str):
        raise ConfigError(f"{what} {value!r} {problem} (write a CEL expression over "
                          "event, e.g. 'event.data.account_id', or a quoted string)")
    return value


def _period_ms(value: object, what: str, max_ms: int, max_text: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str | datetime.timedelta):
        raise ConfigError(f"{what} must be a duration (ms int, timedelta or '1m'), "
                          f"got {type(value).__name__}")
    try:
        ms = duration_ms(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None
    if not _SECOND_MS <= ms <= max_ms:
        raise ConfigError(f"{what} must be between 1s and {max_text}, got {value!r}")
    return ms
