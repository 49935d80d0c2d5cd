"""A user function plus its configuration, as returned by ``Client.create_function``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdk.errors import ConfigError
from sdk.events import TriggerEvent
from topics import records

if TYPE_CHECKING:
    from sdk.context import Context

Handler = Callable[["Context"], Awaitable[Any]]

DEFAULT_RETRIES = 4


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """What the engine needs to know about a function.

    ``id`` is the registered id, ``f"{app_id}-{fn_id}"``; ``retries`` counts the
    retries after the first attempt.
    """

    id: str
    fn_id: str
    app_id: str
    name: str
    triggers: tuple[TriggerEvent, ...]
    retries: int

    def registration(self, ts: int) -> records.FunctionRegistered:
        """The record that publishes this function to the registry."""
        return records.FunctionRegistered(
            fn_id=self.id,
            app_id=self.app_id,
            name=self.name,
            triggers=[t.to_wire() for t in self.triggers],
            retries=self.retries,
            ts=ts,
        )


class Function:
    """A durable function: the user's async handler and its :class:`FunctionConfig`.

    Calling it calls the handler directly (handy in tests); the worker runs it through
    :func:`sdk.execution.execute` instead.
    """

    # Copied from the handler by functools.update_wrapper; declared for type checkers.
    __name__: str
    __qualname__: str
    __wrapped__: Handler

    def __init__(self, handler: Handler, config: FunctionConfig) -> None:
        self.handler = handler
        self.config = config
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

    def __call__(self, ctx: Context) -> Awaitable[Any]:
        return self.handler(ctx)

    def __repr__(self) -> str:
        return f"<sdk.Function {self.id!r}>"


def make_config(
    *,
    app_id: str,
    fn_id: str,
    trigger: TriggerEvent | list[TriggerEvent] | tuple[TriggerEvent, ...],
    retries: int,
    name: str | None,
) -> FunctionConfig:
    """Check the arguments of ``create_function``; raises :class:`ConfigError`."""
    if not isinstance(fn_id, str) or not fn_id.strip():
        raise ConfigError("fn_id must be a non-empty string")
    triggers = (trigger,) if isinstance(trigger, TriggerEvent) else tuple(trigger or ())
    if not triggers:
        raise ConfigError(f"function {fn_id!r} needs at least one trigger")
    for t in triggers:
        if not isinstance(t, TriggerEvent):
            raise ConfigError(
                f"function {fn_id!r}: triggers must be sdk.TriggerEvent, got {type(t).__name__}"
            )
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"function {fn_id!r}: retries must be an int >= 0, got {retries!r}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"function {fn_id!r}: name must be a non-empty string or None")
    return FunctionConfig(
        id=f"{app_id}-{fn_id}",
        fn_id=fn_id,
        app_id=app_id,
        name=name or fn_id,
        triggers=triggers,
        retries=retries,
    )


def check_handler(handler: Any, fn_id: str) -> None:
    """Only async handlers are supported: steps are awaited."""
    if not callable(handler):
        raise ConfigError(f"function {fn_id!r}: the decorated object is not callable")
    if not inspect.iscoroutinefunction(handler):
        raise ConfigError(
            f"function {fn_id!r}: the handler must be an async function (async def), "
            "because steps are awaited"
        )

