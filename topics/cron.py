"""Cron schedules: parsing and tick arithmetic in epoch milliseconds. Pure, no I/O.

An expression is ``"[TZ=Area/City] <fields>"`` (``CRON_TZ=`` is accepted too) with 5
fields (minute hour day-of-month month day-of-week) or 6 (the same plus seconds, last, as
croniter reads them), or one of ``@yearly @annually @monthly @weekly @daily @midnight
@hourly``. Without a zone, times are UTC.

A tick is a moment whose wall-clock time in the zone matches the fields. Daylight-saving
changes follow Vixie cron, which users already know, with RFC 5545's rule for times
that do not exist:

* A schedule whose minute or hour field starts with ``*`` ("every ..." schedules such
  as ``*/15 * * * *`` or ``0 * * * *``) follows real time: when clocks go back, the
  repeated wall times tick again (every 15 minutes stays every 15 minutes), and wall
  times skipped when clocks go forward do not exist, so they do not tick.
* Any other schedule (fixed times such as ``30 2 * * *``) ticks once per matching wall
  time: when clocks go back, only at the first occurrence; a wall time skipped when
  clocks go forward ticks at the moment it would have been with the old offset (02:30
  on a day when 02:00 jumps to 03:00 ticks at 03:30), so a daily job never skips a day.

Zone transitions are assumed at least a day apart, as in every real zone's rules.
"""

from __future__ import annotations

import datetime
import re
import threading
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MS = datetime.timedelta(milliseconds=1)
_SECOND = 1000
_DAY = 86_400_000
# Each loop turn of a query crosses one offset change; no real answer needs more.
_MAX_TURNS = 10_000

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_TZ_PREFIX = re.compile(r"(?:CRON_)?TZ=(\S*)$")
_TOKEN_SPLIT = re.compile(r"[,/\-]")


class CronSchedule:
    """A parsed cron expression; make one with :func:`parse_cron`.

    ``expr`` is the original string, ``zone`` the time zone, ``fields`` the cron fields
    without the zone. Queries are thread-safe.
    """

    def __init__(self, expr: str, zone: datetime.tzinfo, fields: str) -> None:
        self.expr = expr
        self.zone = zone
        self.fields = fields
        # TriggerCron(jitter=...): each tick's run starts up to this much later (the
        # engine's cron service derives the delay from function id and tick).
        self.jitter_ms = 0
        parts = fields.split()
        # Vixie cron's MIN_STAR / HR_STAR: such schedules follow real time across DST.
        self.follows_real_time = parts[0].startswith("*") or parts[1].startswith("*")
        self._fixed = zone is datetime.UTC
        self._iter = croniter(fields, _EPOCH)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CronSchedule({self.expr!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSchedule) and other.expr == self.expr

    def __hash__(self) -> int:
        return hash(self.expr)

    # -- the queries -------------------------------------------------------------------

    def next_after(self, ms: int) -> int:
        """The first tick strictly after ``ms`` (epoch milliseconds), in epoch ms."""
        return self._first_at_or_after(ms + 1)

    def latest_at_or_before(self, ms: int) -> int:
        """The most recent tick at or before ``ms`` (epoch milliseconds), in epoch ms."""
        if self._fixed:
            return self._wall_le(ms)
        wall_mode = not self.follows_real_time
        best: int | None = None
        b = ms
        for _ in range(_MAX_TURNS):
            if best is not None and b <= best:
                return best
            local = self._local(b)
            o = _offset_ms(local)
            if wall_mode and local.fold == 1:
                # Repeated wall times after clocks went back: their ticks were the first
                # occurrences, before the change.
                first = _offset_ms(local.replace(fold=0))
                b = self._first_change(b - (first - o), b) - 1
                continue
            tick = self._wall_le(b + o) - o
            start = self._segment_start(tick, b, o)
            if start is None:
                if wall_mode and self._local(tick).fold == 1:
                    b = tick  # a repeated wall time: its tick was the first occurrence
                    continue
                return tick if best is None else max(best, tick)
            before = self._offset(start - 1)
            if wall_mode and o > before:
                # Clocks went forward at ``start``: skipped wall times tick at their
                # old-offset moments, which lie in [start, start + gap).
                wall = self._wall_le(start + o - 1)
                while wall >= start + before:
                    if wall - before <= b:
                        best = wall - before if best is None else max(best, wall - before)
                        break
                    wall = self._wall_le(wall - 1)
            b = start - 1
        raise RuntimeError(f"cron {self.expr!r}: no tick found at or before {ms}")

    # -- internals ---------------------------------------------------------------------

    def _first_at_or_after(self, a: int) -> int:
        if self._fixed:
            return self._wall_ge(a)
        wall_mode = not self.follows_real_time
        best: int | None = None
        if wall_mode:
            best = self._shifted_at_or_after(a)
        for _ in range(_MAX_TURNS):
            if best is not None and a >= best:
                return best
            local = self._local(a)
            o = _offset_ms(local)
            if wall_mode and local.fold == 1:
                # Wall times repeated after clocks went back already ticked: skip to
                # the first moment whose wall time is new.
                first = _offset_ms(local.replace(fold=0))
                a = self._first_change(a - (first - o), a) + (first - o)
                continue
            tick = self._wall_ge(a + o) - o
            change = self._change_in(a, tick, o)
            if change is None:
                return tick if best is None else min(best, tick)
            after = self._offset(change)
            if wall_mode and after > o:
                # Clocks go forward at ``change``: a skipped wall time ticks at its
                # old-offset moment.
                wall = self._wall_ge(change + o)
                if wall < change + after:
                    best = wall - o if best is None else min(best, wall - o)
            a = change
        raise RuntimeError(f"cron {self.expr!r}: no tick found at or after {a}")

    def _shifted_at_or_after(self, a: int) -> int | None:
        """If clocks went forward less than a gap's length before ``a``, the first
        skipped wall time whose old-offset moment is at or after ``a``."""
        o = self._offset(a)
        start = self._segment_start(a - _DAY, a, o)
        if start is None:
            return None
        before = self._offset(start - 1)
        if before >= o or a >= start + (o - before):
            return None
        wall = self._wall_ge(a + before)
        return wall - before if wall < start + o else None

    def _local(self, ms: int) -> datetime.datetime:
        return (_EPOCH_UTC + datetime.timedelta(milliseconds=ms)).astimezone(self.zone)

    def _offset(self, ms: int) -> int:
        return _offset_ms(self._local(ms))

    def _first_change(self, lo: int, hi: int) -> int:
        """The first moment in (lo, hi] whose offset differs from lo's (one change there)."""
        o = self._offset(lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._offset(mid) == o:
                lo = mid
            else:
                hi = mid
        return hi

    def _change_in(self, a: int, b: int, o: int) -> int | None:
        """The first moment in (a, b] whose offset is not ``o`` (a's), or None."""
        x = a
        while x < b:
            y = min(x + _DAY, b)
            if self._offset(y) != o:
                return self._first_change(x, y)
            x = y
        return None

    def _segment_start(self, a: int, b: int, o: int) -> int | None:
        """Where the offset became ``o`` (b's) if that is in (a, b], else None."""
        y = b
        while y > a:
            x = max(y - _DAY, a)
            if self._offset(x) != o:
                return self._first_change(x, y)
            y = x
        return None

    def _wall_ge(self, wall: int) -> int:
        """The first matching wall time >= ``wall`` (naive ms)."""
        start = wall - wall % _SECOND - _SECOND
        with self._lock:
            self._iter.set_current(_EPOCH + datetime.timedelta(milliseconds=start), force=True)
            while True:
                found = self._iter.get_next(datetime.datetime)
                tick = (found - _EPOCH) // _MS
                if tick >= wall:
                    return int(tick)

    def _wall_le(self, wall: int) -> int:
        """The last matching wall time <= ``wall`` (naive ms)."""
        start = wall - wall % _SECOND + _SECOND
        with self._lock:
            self._iter.set_current(_EPOCH + datetime.timedelta(milliseconds=start), force=True)
            while True:
                found = self._iter.get_prev(datetime.datetime)
                tick = (found - _EPOCH) // _MS
                if tick <= wall:
                    return int(tick)


def _offset_ms(local: datetime.datetime) -> int:
    offset = local.utcoffset()
    return 0 if offset is None else offset // _MS


def parse_cron(expr: str) -> CronSchedule:
    """Parse ``expr``; raises ValueError with a one-line reason if it is not valid."""
    if not isinstance(expr, str):
        raise ValueError(f"a cron expression must be a string, got {type(expr).__name__}")
    parts = expr.split()
    if not parts:
        raise ValueError("cron expression is empty")
    zone: datetime.tzinfo = datetime.UTC
    tz = _TZ_PREFIX.match(parts[0])
    if tz is not None:
        zone = _zone(expr, tz.group(1))
        parts = parts[1:]
    if len(parts) == 1 and parts[0].lower() in _ALIASES:
        parts = _ALIASES[parts[0].lower()].split()
    if len(parts) not in (5, 6):
        raise ValueError(
            f"invalid cron {expr!r}: expected 5 fields (minute hour day-of-month month "
            f"day-of-week), or 6 with seconds last, got {len(parts)}"
        )
    for field in parts:
        if any(token.upper() in ("R", "H") for token in _TOKEN_SPLIT.split(field)):
            raise ValueError(f"invalid cron {expr!r}: random and hashed fields (R, H) are "
                             "not supported, ticks must be the same everywhere")
    fields = " ".join(parts)
    try:
        schedule = CronSchedule(expr, zone, fields)
        schedule.next_after(0)  # a schedule that can never tick (Feb 30) fails here
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # croniter's errors
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"invalid cron {expr!r}: {reason}") from None
    return schedule


def _zone(expr: str, name: str) -> datetime.tzinfo:
    if name in ("UTC", "Etc/UTC", "Z"):
        return datetime.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"invalid cron {expr!r}: unknown time zone {name!r}") from None
