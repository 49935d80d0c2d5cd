"""Durations and moments as integer milliseconds, the only unit on the wire."""

from __future__ import annotations

import datetime
import re
import time

_UNIT_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
}
# One or more number+unit parts, as in "2s", "500ms", "1h30m", "1.5d".
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")

Duration = int | str | datetime.timedelta


def wall_ms() -> int:
    """Milliseconds since the Unix epoch, from the wall clock."""
    return time.time_ns() // 1_000_000


def duration_ms(value: Duration) -> int:
    """A duration in milliseconds.

    ``value`` is an int (milliseconds), a :class:`datetime.timedelta`, or a string of
    number+unit parts with units ``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` ("2s",
    "500ms", "1h30m"). Negative durations are rejected.
    """
    if isinstance(value, bool):
        raise TypeError("a duration cannot be a bool")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, datetime.timedelta):
        ms = value // datetime.timedelta(milliseconds=1)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not _WHOLE.fullmatch(text):
            raise ValueError(
                f"cannot read duration {value!r}: use e.g. '500ms', '2s', '5m', '1h30m', '1d'"
            )
        ms = round(sum(float(n) * _UNIT_MS[unit] for n, unit in _PART.findall(text)))
    else:
        raise TypeError(
            "a duration must be milliseconds (int), a timedelta or a string like '2s', "
            f"got {type(value).__name__}"
        )
    if ms < 0:
        raise ValueError(f"duration {value!r} is negative")
    return ms


def datetime_ms(moment: datetime.datetime | str) -> int:
    """Epoch milliseconds of a datetime (or ISO 8601 string); naive means UTC."""
    if isinstance(moment, str):
        moment = datetime.datetime.fromisoformat(moment)
    if not isinstance(moment, datetime.datetime):
        raise TypeError(f"expected a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return delta // datetime.timedelta(milliseconds=1)


def retry_at_ms(retry_after: int | datetime.timedelta | datetime.datetime, now_ms: int) -> int:
    """The absolute epoch ms a :class:`~sdk.RetryAfterError` asks to wait for."""
    if isinstance(retry_after, datetime.datetime):
        return datetime_ms(retry_after)
    return now_ms + duration_ms(retry_after)
