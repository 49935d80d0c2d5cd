"""Function options beyond triggers and retries: cancellation rules and timeouts.

Each option checks its own shape when made and its meaning (CEL parses, durations are
positive) in :meth:`wire`, which ``create_function`` calls so that the
:class:`~sdk.ConfigError` names the function.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from sdk._durations import Duration, duration_ms
from sdk._errors import ConfigError
from sdk._expressions import cel_problem, match_path


def _is_duration(value: object) -> bool:
    return (isinstance(value, int | str | datetime.timedelta)
            and not isinstance(value, bool))


def positive_ms(value: Duration | None, what: str) -> int | None:
    """``value`` in milliseconds (None stays None); raises ConfigError unless > 0."""
    if value is None:
        return None
    try:
        ms = duration_ms(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None
    if ms <= 0:
        raise ConfigError(f"{what} must be more than 0, got {value!r}")
    return ms


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel a running run of the function when a matching event arrives.

    ``event`` is the cancelling event's name. ``match`` is a field path
    ("data.order_id", a leading ``event.``/``async.`` is stripped) whose value must be
    equal in the run's triggering event and the cancelling one. ``if_exp`` is a CEL
    condition over ``event`` (the trigger) and ``async`` (the cancelling event), e.g.
    ``"async.data.user_id == event.data.user_id"``. ``timeout`` bounds how long after the
    run starts the rule applies (None: for the whole run).
    """

    event: str
    match: str | None = None
    if_exp: str | None = None
    timeout: Duration | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event.strip():
            raise ConfigError("Cancel.event must be a non-empty event name")
        if self.match is not None and not isinstance(self.match, str):
            raise ConfigError("Cancel.match must be a field path string or None")
        if self.if_exp is not None and not isinstance(self.if_exp, str):
            raise ConfigError("Cancel.if_exp must be a CEL expression string or None")
        if self.timeout is not None and not _is_duration(self.timeout):
            raise ConfigError("Cancel.timeout must be a duration (ms, timedelta or '1h') "
                              "or None")

    def wire(self, where: str) -> dict[str, Any]:
        """The rule as ``FunctionRegistered.cancel`` carries it; ``where`` names the
        function in errors."""
        what = f"{where}: cancel on {self.event!r}"
        path = None
        if self.match is not None:
            try:
                path = match_path(self.match)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{what}: {exc}") from None
        if self.if_exp is not None:
            problem = cel_problem(self.if_exp)
            if problem is not None:
                raise ConfigError(f"{what}: if_exp {self.if_exp!r} {problem}")
        return {"event": self.event, "match": path, "if_exp": self.if_exp,
                "timeout_ms": positive_ms(self.timeout, f"{what}: timeout")}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Give up on runs that wait or last too long: the run is cancelled.

    ``start``: the most time from the run's request until a worker starts it (a
    backlog). ``finish``: the most time from the run's start until it ends.
    """

    start: Duration | None = None
    finish: Duration | None = None

    def __post_init__(self) -> None:
        for name in ("start", "finish"):
            value = getattr(self, name)
            if value is not None and not _is_duration(value):
                raise ConfigError(f"Timeouts.{name} must be a duration (ms, timedelta or "
                                  "'1h') or None")

    def wire(self, where: str) -> dict[str, Any] | None:
        """``{"start_ms", "finish_ms"}`` for ``FunctionRegistered.timeouts``; None when
        neither is set. ``where`` names the function in errors."""
        start = positive_ms(self.start, f"{where}: timeouts.start")
        finish = positive_ms(self.finish, f"{where}: timeouts.finish")
        if start is None and finish is None:
            return None
        return {"start_ms": start, "finish_ms": finish}
