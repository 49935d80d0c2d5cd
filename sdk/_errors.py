"""Exceptions users raise, catch or see from the SDK."""

from __future__ import annotations

import datetime


class NonRetriableError(Exception):
    """Raise from a step or function to fail it at once, without retries."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class RetryAfterError(Exception):
    """Raise from a step or function to be retried no earlier than ``retry_after``.

    ``retry_after`` is a delay in milliseconds (int), a delay (timedelta), or a moment
    (datetime; a naive datetime is taken as UTC).
    """

    def __init__(self, message: str,
                 retry_after: int | datetime.timedelta | datetime.datetime) -> None:
        if isinstance(retry_after, bool) or not isinstance(
            retry_after, int | datetime.timedelta | datetime.datetime
        ):
            raise TypeError(
                "retry_after must be milliseconds (int), a timedelta or a datetime, "
                f"got {type(retry_after).__name__}"
            )
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class StepError(Exception):
    """A step failed for good (it exhausted its retries, or failed non-retriably).

    Raised inside the function by the ``step.*`` call whose memoized outcome is an
    error; the function may catch it. Uncaught, it fails the run without retries,
    because re-running the function would meet the same memoized error.
    """

    def __init__(self, message: str, *, name: str = "Error", stack: str | None = None,
                 step_id: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.stack = stack
        self.step_id = step_id

    def __str__(self) -> str:
        where = f"step {self.step_id!r} failed: " if self.step_id else ""
        return f"{where}{self.name}: {self.message}"


class EventError(ValueError):
    """An event that cannot be sent: bad name, data that is not JSON, or too large."""


class SendError(RuntimeError):
    """The broker did not acknowledge an event; it may or may not have been stored."""


class ConfigError(ValueError):
    """A function or client was declared with invalid configuration."""
