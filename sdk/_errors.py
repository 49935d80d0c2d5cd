"""Exceptions users raise, catch or see from the SDK."""

from __future__ import annotations

import datetime

from topics.error_codes import STEP_ERRORED


class NonRetriableError(Exception):
    """Raise from a step or function to fail it at once, without retries.

    ``quiet=True`` (as in Inngest) keeps the worker from logging a line for it: for
    failures that are expected and handled elsewhere.
    """

    def __init__(self, message: str | None = "", quiet: bool = False) -> None:
        message = "" if message is None else message
        super().__init__(message)
        self.message = message
        self.quiet = _check_quiet(quiet)


class RetryAfterError(Exception):
    """Raise from a step or function to be retried no earlier than ``retry_after``.

    ``retry_after`` is a delay in milliseconds (int), a delay (timedelta), or a moment
    (datetime; a naive datetime is taken as UTC). ``quiet=True``: no log line for it.
    """

    def __init__(self, message: str | None,
                 retry_after: int | datetime.timedelta | datetime.datetime,
                 quiet: bool = False) -> None:
        if isinstance(retry_after, bool) or not isinstance(
            retry_after, int | datetime.timedelta | datetime.datetime
        ):
            raise TypeError(
                "retry_after must be milliseconds (int), a timedelta or a datetime, "
                f"got {type(retry_after).__name__}"
            )
        message = "" if message is None else message
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.quiet = _check_quiet(quiet)


def _check_quiet(quiet: object) -> bool:
    if not isinstance(quiet, bool):
        raise TypeError(f"quiet must be True or False, got {type(quiet).__name__}")
    return quiet


def is_quiet(exc: BaseException) -> bool:
    """Whether ``exc`` asked not to be logged (``quiet=True``)."""
    return getattr(exc, "quiet", False) is True


class StepError(Exception):
    """A step failed for good (it exhausted its retries, or failed non-retriably).

    Raised inside the function by the ``step.*`` call whose memoized outcome is an
    error; the function may catch it. Uncaught, it fails the run without retries,
    because re-running the function would meet the same memoized error.

    ``name``, ``message`` and ``stack`` are the step's own error's; ``code`` its code
    (:mod:`topics.error_codes`: ``"non_retriable_error"`` if the step raised
    :class:`NonRetriableError`, ``"step_errored"`` for any other failure).
    """

    def __init__(self, message: str, *, name: str = "Error", stack: str | None = None,
                 step_id: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.stack = stack
        self.step_id = step_id
        self.code = code or STEP_ERRORED

    def __str__(self) -> str:
        where = f"step {self.step_id!r} failed: " if self.step_id else ""
        return f"{where}{self.name}: {self.message}"


class EventError(ValueError):
    """An event that cannot be sent: bad name, data that is not JSON, or too large."""


class SendError(RuntimeError):
    """The broker did not acknowledge an event; it may or may not have been stored."""


class ConfigError(ValueError):
    """A function or client was declared with invalid configuration."""
