"""A user function plus its configuration, as returned by ``Client.create_function``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdk._errors import ConfigError
from sdk._events import TriggerCron, TriggerEvent, TriggerTopic
from sdk._expressions import cel_problem
from sdk._flow import FlowOptions, check_combinations
from sdk._options import Cancel, Timeouts
from topics import records
from topics.cron import parse_cron

if TYPE_CHECKING:
    from sdk._client import Client
    from sdk._context import Context, ContextSync
    from sdk._middleware import MiddlewareFactory
    from sdk._serializer import OutputType

# An async handler takes a Context; a sync one (def) a ContextSync (sdk/_sync.py).
Handler = Callable[["Context"], Awaitable[Any]] | Callable[["ContextSync"], Any]
Trigger = TriggerEvent | TriggerCron | TriggerTopic

DEFAULT_RETRIES = 4


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """What the engine needs to know about a function.

    ``id`` is the registered id, ``f"{app_id}-{fn_id}"``; ``retries`` counts the
    retries after the first attempt. ``cancel``, ``timeouts`` and ``idempotency`` are
    as given to ``create_function`` (already checked); ``flow`` holds its flow-control
    options (concurrency, throttle, rate_limit, priority, singleton, batch_events,
    debounce).
    """

    id: str
    fn_id: str
    app_id: str
    name: str
    triggers: tuple[Trigger, ...]
    retries: int
    cancel: tuple[Cancel, ...] = ()
    timeouts: Timeouts | None = None
    idempotency: str | None = None
    flow: FlowOptions | None = None

    def registration(self, ts: int) -> records.FunctionRegistered:
        """The record that publishes this function to the registry."""
        where = f"function {self.fn_id!r}"
        return records.FunctionRegistered(
            fn_id=self.id,
            app_id=self.app_id,
            name=self.name,
            triggers=[t.to_wire() for t in self.triggers],
            retries=self.retries,
            ts=ts,
            cancel=[c.wire(where) for c in self.cancel],
            timeouts=self.timeouts.wire(where) if self.timeouts is not None else None,
            idempotency=self.idempotency,
            flow=self.flow.wire(where) if self.flow is not None else None,
        )


class Function:
    """A durable function: the user's handler and its :class:`FunctionConfig`.

    The handler is async (``async def``, given a :class:`~sdk.Context`) or sync
    (``def``, given a :class:`~sdk.ContextSync`; see :attr:`is_sync`). Calling the
    function calls the handler directly; the worker runs it through
    :func:`sdk._execution.execute` instead, and :func:`sdk.testing.trigger` runs it as
    the engine would, without a broker.
    """

    # Copied from the handler by functools.update_wrapper; declared for type checkers.
    __name__: str
    __qualname__: str
    __wrapped__: Handler

    def __init__(self, handler: Handler, config: FunctionConfig) -> None:
        self.handler = handler
        self.config = config
        # The function created for ``create_function(on_failure=...)``, if any.
        self.on_failure: Function | None = None
        # Set by create_function: the client (its middleware runs first) and this
        # function's own middleware (sdk/_middleware.py).
        self.client: Client | None = None
        self.middleware: tuple[MiddlewareFactory, ...] = ()
        # create_function(output_type=...): converts the handler's return to JSON.
        self.output_type: OutputType | None = None
        functools.update_wrapper(self, handler)

    @property
    def id(self) -> str:
        """The registered id, ``f"{app_id}-{fn_id}"``."""
        return self.config.id

    @property
    def fn_id(self) -> str:
        """The id given to ``create_function``, unique within the app."""
        return self.config.fn_id

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_sync(self) -> bool:
        """True for a ``def`` handler, which gets a :class:`~sdk.ContextSync`."""
        return is_sync_handler(self.handler)

    def __call__(self, ctx: Any) -> Any:
        return self.handler(ctx)

    def __repr__(self) -> str:
        return f"<sdk.Function {self.id!r}>"


def make_config(
    *,
    app_id: str,
    fn_id: str,
    trigger: Trigger | list[Trigger] | tuple[Trigger, ...],
    retries: int,
    name: str | None,
    cancel: Cancel | list[Cancel] | tuple[Cancel, ...] | None = None,
    timeouts: Timeouts | None = None,
    idempotency: str | None = None,
    flow: FlowOptions | None = None,
) -> FunctionConfig:
    """Check the arguments of ``create_function``; raises :class:`ConfigError` naming
    the function and the problem."""
    if not isinstance(fn_id, str) or not fn_id.strip():
        raise ConfigError("fn_id must be a non-empty string")
    where = f"function {fn_id!r}"
    triggers = _as_tuple(trigger, (TriggerEvent, TriggerCron, TriggerTopic))
    if not triggers:
        raise ConfigError(f"{where} needs at least one trigger")
    for t in triggers:
        _check_trigger(t, where)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"{where}: retries must be an int >= 0, got {retries!r}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"{where}: name must be a non-empty string or None")
    rules = _as_tuple(cancel, (Cancel,))
    for rule in rules:
        if not isinstance(rule, Cancel):
            raise ConfigError(f"{where}: cancel must be sdk.Cancel or a list of them, "
                              f"got {type(rule).__name__}")
        rule.wire(where)
    if timeouts is not None:
        if not isinstance(timeouts, Timeouts):
            raise ConfigError(f"{where}: timeouts must be sdk.Timeouts or None, "
                              f"got {type(timeouts).__name__}")
        timeouts.wire(where)
    if idempotency is not None:
        problem = cel_problem(idempotency)
        if problem is not None:
            raise ConfigError(f"{where}: idempotency {idempotency!r} {problem} "
                              "(write a CEL expression over event, e.g. "
                              "'event.data.payment_id')")
    if flow is not None:
        check_combinations(where, flow.wire(where), idempotency=idempotency, cancel=rules)
    return FunctionConfig(
        id=f"{app_id}-{fn_id}",
        fn_id=fn_id,
        app_id=app_id,
        name=name or fn_id,
        triggers=triggers,
        retries=retries,
        cancel=rules,
        timeouts=timeouts,
        idempotency=idempotency,
        flow=flow,
    )


def _as_tuple(value: Any, single: tuple[type, ...]) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, single):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)  # rejected by the caller's type check, naming the type


def _check_trigger(trigger: object, where: str) -> None:
    if isinstance(trigger, TriggerEvent | TriggerTopic):
        if trigger.expression is not None:
            problem = cel_problem(trigger.expression)
            if problem is not None:
                named = (trigger.event if isinstance(trigger, TriggerEvent)
                         else f"topic {trigger.topic}")
                raise ConfigError(f"{where}: trigger {named!r} expression "
                                  f"{trigger.expression!r} {problem}")
    elif isinstance(trigger, TriggerCron):
        try:
            parse_cron(trigger.cron)
        except ValueError as exc:
            raise ConfigError(f"{where}: trigger {exc}") from None
    else:
        raise ConfigError(f"{where}: triggers must be sdk.TriggerEvent, sdk.TriggerCron or "
                          f"sdk.TriggerTopic, "
                          f"got {type(trigger).__name__}")


def is_sync_handler(handler: Any) -> bool:
    """False for ``async def`` handlers (and callables whose ``__call__`` is one)."""
    return not (inspect.iscoroutinefunction(handler)
                or inspect.iscoroutinefunction(type(handler).__call__))


def check_handler(handler: Any, fn_id: str, what: str = "the handler") -> None:
    """A handler is ``async def`` (taking a Context) or ``def`` (taking a ContextSync,
    its steps blocking); either returns the function's output."""
    if not callable(handler):
        raise ConfigError(f"function {fn_id!r}: {what} is not callable")
    if inspect.isgeneratorfunction(handler) or inspect.isasyncgenfunction(handler):
        raise ConfigError(f"function {fn_id!r}: {what} is a generator; it must return the "
                          "function's output (def or async def with return, not yield)")
