"""Middleware: code that runs at fixed points of every execution and every send.

Inngest's hooks, in Inngest's order (``inngest/_internal/middleware_lib``): one
execution of a function (one task, or one round of a run-ahead pass) calls

    transform_input -> before_memoization -> after_memoization -> before_execution
    -> (before_send_events, after_send_events) -> after_execution
    -> transform_output (once per outcome) -> before_response

and ``Client.send`` calls ``before_send_events`` and ``after_send_events``. "Before"
hooks run in list order (the client's middleware, then the function's); "after" hooks
(after_memoization, after_execution, transform_output, after_send_events) in reverse
order, as Inngest does. A middleware is a class (or a factory) called with
``(client, raw_request)`` for each execution and each send, so it may keep state on
``self`` for that one execution; ``raw_request`` is the :class:`~topics.records.Task`
being executed (None for a send).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sdk._events import Event

if TYPE_CHECKING:
    from sdk._client import Client
    from sdk._context import Context
    from sdk._function import Function


class _Empty:
    """No output (a failure, or a step that produces none)."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY: Any = _Empty()


@dataclasses.dataclass(slots=True)
class TransformOutputStepInfo:
    """The step an outcome is for: ``id`` (as in the run's step list), ``op`` (the
    outcome kind: ``"step.completed"``, ``"step.failed"``, ``"step.sleep"``,
    ``"step.wait"``, ``"step.invoke"``) and ``opts``: for an invoke
    ``{"function_id", "payload": {"data"}}`` (as Inngest's), for a wait its
    ``{"event", "match", "if_exp"}``, else None. Changes to it are discarded, except to
    an invoke's ``opts["payload"]["data"]``, which becomes the child's event data."""

    id: str
    op: str
    opts: dict[str, Any] | None


@dataclasses.dataclass(slots=True)
class TransformOutputResult:
    """What ``transform_output`` may change: ``output`` (:data:`EMPTY` when there is
    none) and ``error`` (None unless the step or function failed)."""

    error: Exception | None
    output: Any
    step: TransformOutputStepInfo | None

    def has_output(self) -> bool:
        """True unless there is no output (a failure, a sleep, a wait, an invoke)."""
        return self.output is not EMPTY


@dataclasses.dataclass(slots=True)
class SendEventsResult:
    """What ``after_send_events`` sees: the events' ids, and the error if sending
    failed (then ``ids`` is empty)."""

    ids: list[str]
    error: str | None = None


@dataclasses.dataclass(slots=True)
class Memo:
    """One memoized step outcome: ``data`` (its value), or ``error``
    (``{"name", "message", "stack"}``) if it failed."""

    data: Any = None
    error: dict[str, Any] | None = None


class StepMemos:
    """The memoized step outcomes an execution starts from, by step id, as
    ``transform_input`` sees them; change ``memo.data`` to change what the step
    returns (Inngest's ``StepMemos``)."""

    def __init__(self, memos: dict[str, Memo],
                 entries: dict[str, dict[str, Any]] | None = None) -> None:
        self._memos = memos
        # The wire entries they came from: keys other than data/error are kept.
        self._entries = entries or {}

    @property
    def size(self) -> int:
        """How many steps are memoized."""
        return len(self._memos)

    def __len__(self) -> int:
        return len(self._memos)

    def values(self) -> Iterator[Memo]:
        return iter(self._memos.values())

    def items(self) -> Iterator[tuple[str, Memo]]:
        return iter(self._memos.items())

    def get(self, step_id: str) -> Memo | None:
        return self._memos.get(step_id)

    @classmethod
    def from_steps(cls, steps: dict[str, dict[str, Any]]) -> StepMemos:
        return cls({k: Memo(data=v.get("data"), error=v.get("error"))
                    for k, v in steps.items()}, steps)

    def to_steps(self) -> dict[str, dict[str, Any]]:
        out = {}
        for k, m in self._memos.items():
            entry = {n: v for n, v in self._entries.get(k, {}).items()
                     if n not in ("data", "error")}
            entry.update({"error": m.error} if m.error is not None else {"data": m.data})
            out[k] = entry
        return out


class Middleware:
    """Base class of async middleware: override the hooks you need.

    Constructed for each execution and each send with the client and the raw request
    (the task; None for a send). Every hook may be called several times per run: once
    per execution, and a run is executed again after each step, as in Inngest.
    """

    def __init__(self, client: Client, raw_request: object) -> None:
        self.client = client
        self.raw_request = raw_request

    async def transform_input(self, ctx: Context, function: Function,
                              steps: StepMemos) -> None:
        """Before the function is called: change ``ctx`` (e.g. ``ctx.event.data``) or
        the memoized step values in ``steps``."""

    async def before_memoization(self) -> None:
        """Before the function replays its memoized steps."""

    async def after_memoization(self) -> None:
        """Once the memoized steps are exhausted (at once if there are none)."""

    async def before_execution(self) -> None:
        """Before new code runs: right after :meth:`after_memoization`."""

    async def after_execution(self) -> None:
        """After the function stopped (returned, raised, or met a new step)."""

    async def transform_output(self, result: TransformOutputResult) -> None:
        """Once per outcome of the execution (each new step, or the function's end):
        change ``result.output`` or ``result.error``; that is what is stored."""

    async def before_response(self) -> None:
        """After the outputs are set, before the outcomes are reported."""

    async def before_send_events(self, events: list[Event]) -> None:
        """Before events are sent (``Client.send`` or ``step.send_event``): change
        ``event.data`` of the (copied) events."""

    async def after_send_events(self, result: SendEventsResult) -> None:
        """After events are sent, with their ids or the error."""


class MiddlewareSync:
    """Base class of sync middleware: the same hooks as :class:`Middleware`, as plain
    methods. Use it for middleware that does no I/O, or for ``Client.send_sync``."""

    def __init__(self, client: Client, raw_request: object) -> None:
        self.client = client
        self.raw_request = raw_request

    def transform_input(self, ctx: Context, function: Function, steps: StepMemos) -> None:
        """See :meth:`Middleware.transform_input`."""

    def before_memoization(self) -> None:
        """See :meth:`Middleware.before_memoization`."""

    def after_memoization(self) -> None:
        """See :meth:`Middleware.after_memoization`."""

    def before_execution(self) -> None:
        """See :meth:`Middleware.before_execution`."""

    def after_execution(self) -> None:
        """See :meth:`Middleware.after_execution`."""

    def transform_output(self, result: TransformOutputResult) -> None:
        """See :meth:`Middleware.transform_output`."""

    def before_response(self) -> None:
        """See :meth:`Middleware.before_response`."""

    def before_send_events(self, events: list[Event]) -> None:
        """See :meth:`Middleware.before_send_events`."""

    def after_send_events(self, result: SendEventsResult) -> None:
        """See :meth:`Middleware.after_send_events`."""


AnyMiddleware = Middleware | MiddlewareSync
# A middleware class, or any callable making one from (client, raw_request).
MiddlewareFactory = Callable[["Client", object], AnyMiddleware]


def check_middleware(middleware: object, where: str) -> tuple[MiddlewareFactory, ...]:
    """The checked ``middleware=`` argument; TypeError naming it otherwise."""
    if middleware is None:
        return ()
    if not isinstance(middleware, list | tuple):
        raise TypeError(f"{where}: middleware must be a list of sdk.Middleware or "
                        f"sdk.MiddlewareSync classes, got {type(middleware).__name__}")
    for m in middleware:
        if isinstance(m, Middleware | MiddlewareSync):
            raise TypeError(f"{where}: middleware takes classes (or factories), not "
                            f"instances: pass {type(m).__name__}, not "
                            f"{type(m).__name__}(...); one is made per execution")
        if inspect.isclass(m) and not issubclass(m, Middleware | MiddlewareSync):
            raise TypeError(f"{where}: middleware {m.__name__} must subclass "
                            "sdk.Middleware or sdk.MiddlewareSync")
        if not callable(m):
            raise TypeError(f"{where}: middleware items must be classes or factories, "
                            f"got {type(m).__name__}")
    return tuple(middleware)


# "After" hooks run in reverse order, as Inngest's MiddlewareManager does.
_REVERSED = frozenset({"after_memoization", "after_execution", "transform_output",
                       "after_send_events"})


class Manager:
    """The middleware instances of one execution or one send, and the hook calls."""

    def __init__(self, instances: list[AnyMiddleware]) -> None:
        self.instances = instances

    @classmethod
    def create(cls, client: Client | None, factories: tuple[MiddlewareFactory, ...],
               raw_request: object) -> Manager | None:
        """Instantiate ``factories`` (None if there are none: no hook is called)."""
        if not factories:
            return None
        instances = []
        for f in factories:
            m = f(client, raw_request)  # type: ignore[arg-type]
            if not isinstance(m, Middleware | MiddlewareSync):
                raise TypeError(f"middleware factory {f!r} returned {type(m).__name__}, "
                                "not an sdk.Middleware or sdk.MiddlewareSync")
            instances.append(m)
        return cls(instances)

    def _ordered(self, hook: str) -> list[AnyMiddleware]:
        return list(reversed(self.instances)) if hook in _REVERSED else self.instances

    async def call(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every middleware, in its order; exceptions propagate."""
        for m in self._ordered(hook):
            value = getattr(m, hook)(*args)
            if inspect.isawaitable(value):
                await value

    def call_sync(self, hook: str, *args: Any) -> None:
        """:meth:`call` from sync code (``Client.send_sync``): an async hook is run to
        completion on its own loop, which needs no loop running in this thread."""
        for m in self._ordered(hook):
            value = getattr(m, hook)(*args)
            if inspect.isawaitable(value):
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    asyncio.run(_awaited(value))
                    continue
                close = getattr(value, "close", None)
                if close is not None:
                    close()
                raise RuntimeError(
                    f"async middleware hook {type(m).__name__}.{hook} was called from "
                    "sync code inside a running event loop: await the async form "
                    "(client.send) or make the middleware an sdk.MiddlewareSync")


async def _awaited(value: Any) -> Any:
    return await value


def copied(events: Event | list[Event]) -> list[Event]:
    """The events given to ``before_send_events``: copies, so the caller's events keep
    their plain data when a middleware replaces it (encryption)."""
    one = [events] if isinstance(events, Event) else events
    if not isinstance(one, list):
        return one  # to_record rejects it, naming the type
    return [dataclasses.replace(e, data=dict(e.data)) if isinstance(e, Event) else e
            for e in one]


# -- sending (Client.send) -------------------------------------------------------------


def for_send(client: Client) -> Manager | None:
    """The client's middleware for one send (raw_request None), or None."""
    return Manager.create(client, tuple(getattr(client, "middleware", ())), None)


async def send_with_hooks(client: Client, events: Event | list[Event],
                          send: Callable[[Any], Any]) -> list[str]:
    """``await send(events)`` between the client's send hooks."""
    hooks = for_send(client)
    if hooks is None:
        return list(await send(events))
    batch = copied(events)
    await hooks.call("before_send_events", batch)
    try:
        ids = list(await send(batch))
    except Exception as exc:
        await hooks.call("after_send_events", SendEventsResult([], str(exc)))
        raise
    await hooks.call("after_send_events", SendEventsResult(ids))
    return ids


def send_with_hooks_sync(client: Client, events: Event | list[Event],
                         send: Callable[[Any], list[str]]) -> list[str]:
    """``send(events)`` between the client's send hooks, from sync code."""
    hooks = for_send(client)
    if hooks is None:
        return send(events)
    batch = copied(events)
    hooks.call_sync("before_send_events", batch)
    try:
        ids = send(batch)
    except Exception as exc:
        hooks.call_sync("after_send_events", SendEventsResult([], str(exc)))
        raise
    hooks.call_sync("after_send_events", SendEventsResult(ids))
    return ids
