"""``ctx``: what a function is called with."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdk._events import Event
from sdk._group import Group
from sdk._step import Step

if TYPE_CHECKING:
    from sdk._sync import GroupSync, StepSync


@dataclass(slots=True)
class Context:
    """The argument of every function.

    ``event`` is the triggering event, ``events`` all of them: a batch
    (``batch_events``, in accepted order, ``event`` its first) or a debounce's burst
    (``collect=True``, ``event`` its last); else ``[event]``. ``attempt`` counts the
    function's retries (0 first), ``step`` is the step API and ``logger`` a logger that
    stays quiet while memoized steps are replayed, so each line is logged once per run
    rather than once per execution. ``group`` runs lines of steps side by side
    (``ctx.group.parallel``). ``cron_tick`` is
    the scheduled moment (UTC) of a run started by a :class:`~sdk.TriggerCron`,
    and None for other runs.
    """

    event: Event
    events: list[Event]
    run_id: str
    attempt: int
    step: Step
    logger: logging.LoggerAdapter[logging.Logger]
    group: Group
    cron_tick: datetime.datetime | None = None


@dataclass(slots=True)
class ContextSync:
    """The argument of a sync function (``def`` handler): :class:`Context` with a
    blocking step API (:class:`~sdk._sync.StepSync`), for apps that are not asyncio
    (Flask, Django). ``group.parallel`` is ``step.parallel``.
    """

    event: Event
    events: list[Event]
    run_id: str
    attempt: int
    step: StepSync
    group: GroupSync
    logger: logging.LoggerAdapter[logging.Logger]
    cron_tick: datetime.datetime | None = None

    @staticmethod
    def of(ctx: Context, step: StepSync, group: GroupSync) -> ContextSync:
        """The sync twin of ``ctx``, stepping through ``step``."""
        return ContextSync(event=ctx.event, events=ctx.events, run_id=ctx.run_id,
                           attempt=ctx.attempt, step=step, group=group,
                           logger=ctx.logger, cron_tick=ctx.cron_tick)


class ReplayQuietLogger(logging.LoggerAdapter[logging.Logger]):
    """Drops records while ``replaying()`` is true; tags the rest with the run id and
    function id (``%(run_id)s``, ``%(fn_id)s`` in a log format)."""

    def __init__(self, logger: logging.Logger, run_id: str,
                 replaying: Callable[[], bool], fn_id: str = "") -> None:
        super().__init__(logger, {"run_id": run_id, "fn_id": fn_id})
        self._replaying = replaying

    def isEnabledFor(self, level: int) -> bool:
        return not self._replaying() and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs
