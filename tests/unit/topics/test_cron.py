"""topics.cron: parsing, and tick arithmetic across daylight-saving changes."""

from __future__ import annotations

import bisect
import datetime
import itertools
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from topics.cron import CronSchedule, parse_cron

UTC = datetime.UTC
PARIS = ZoneInfo("Europe/Paris")


def ms(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1000)


def at(ms_: int, zone: datetime.tzinfo) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms_ / 1000, zone)


def ticks_after(schedule: CronSchedule, start: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        start = schedule.next_after(start)
        out.append(start)
    return out


def paris(*args: int, fold: int = 0) -> int:
    return ms(datetime.datetime(*args, tzinfo=PARIS, fold=fold))  # type: ignore[misc]


# -- parsing ---------------------------------------------------------------------------


def test_parse_plain_and_zoned() -> None:
    s = parse_cron("*/5 * * * *")
    assert (s.expr, s.zone, s.fields) == ("*/5 * * * *", UTC, "*/5 * * * *")
    z = parse_cron("TZ=Europe/Paris 0 9 * * 1-5")
    assert (z.expr, z.zone, z.fields) == ("TZ=Europe/Paris 0 9 * * 1-5", PARIS, "0 9 * * 1-5")
    assert parse_cron("CRON_TZ=Europe/Paris 0 9 * * *").zone == PARIS
    assert parse_cron("TZ=UTC 0 9 * * *").zone is UTC
    assert parse_cron("@daily").fields == "0 0 * * *"
    assert parse_cron("TZ=Europe/Paris @hourly").fields == "0 * * * *"
    assert parse_cron("0 9 * * *") == parse_cron("0 9 * * *")


@pytest.mark.parametrize(("expr", "reason"), [
    ("", "empty"),
    ("   ", "empty"),
    ("* * * *", "expected 5 fields"),
    ("* * * * * * *", "got 7"),
    ("61 * * * *", "out of range"),
    ("* 25 * * *", "out of range"),
    ("0 0 30 2 *", "invalid cron"),
    ("TZ=Mars/Olympus 0 0 * * *", "unknown time zone 'Mars/Olympus'"),
    ("TZ= 0 0 * * *", "unknown time zone ''"),
    ("TZ=../etc/passwd 0 0 * * *", "unknown time zone"),
    ("R * * * *", "random"),
    ("H * * * *", "random"),
    ("every day", "expected 5 fields"),
    ("a b c d e", "invalid cron"),
])
def test_parse_rejects_with_one_line(expr: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        parse_cron(expr)
    assert "\n" not in str(info.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="string"):
        parse_cron(5)  # type: ignore[arg-type]


# -- UTC -------------------------------------------------------------------------------


def test_utc_next_is_strictly_after_and_latest_is_at_or_before() -> None:
    s = parse_cron("0 0 * * *")
    midnight = ms(datetime.datetime(2024, 1, 1, tzinfo=UTC))
    day = 86_400_000
    assert s.next_after(midnight - 1) == midnight
    assert s.next_after(midnight) == midnight + day
    assert s.latest_at_or_before(midnight) == midnight
    assert s.latest_at_or_before(midnight - 1) == midnight - day
    assert s.latest_at_or_before(midnight + day - 1) == midnight


def test_utc_every_five_minutes_on_weekdays() -> None:
    s = parse_cron("*/5 9-17 * * 1-5")
    friday_5pm = ms(datetime.datetime(2024, 1, 5, 17, 55, tzinfo=UTC))
    assert s.next_after(friday_5pm) == ms(datetime.datetime(2024, 1, 8, 9, 0, tzinfo=UTC))
    assert s.latest_at_or_before(friday_5pm + 60_000) == friday_5pm


def test_seconds_field_is_last() -> None:
    s = parse_cron("* * * * * 15")
    start = ms(datetime.datetime(2024, 1, 1, tzinfo=UTC))
    assert ticks_after(s, start, 3) == [start + 15_000, start + 75_000, start + 135_000]
    assert s.next_after(start + 14_999) == start + 15_000
    assert s.next_after(start + 15_000) == start + 75_000
    assert s.latest_at_or_before(start + 15_000) == start + 15_000
    assert s.latest_at_or_before(start + 14_999) == start + 15_000 - 60_000
    every = parse_cron("*/10 * * * * */20")
    assert ticks_after(every, start, 4) == [start + 20_000, start + 40_000, start + 600_000,
                                            start + 620_000]


def test_sub_second_queries() -> None:
    s = parse_cron("* * * * * *")
    assert s.next_after(1_000_500) == 1_001_000
    assert s.next_after(1_001_000) == 1_002_000
    assert s.latest_at_or_before(1_000_999) == 1_000_000


# -- Europe/Paris across daylight-saving changes ---------------------------------------
# 2024-03-31 02:00 CET -> 03:00 CEST (01:00Z); 2024-10-27 03:00 CEST -> 02:00 CET (01:00Z).


def test_daily_fixed_time_in_paris_keeps_local_time() -> None:
    s = parse_cron("TZ=Europe/Paris 0 9 * * *")
    got = ticks_after(s, paris(2024, 3, 29, 12), 4)
    assert [at(t, PARIS).strftime("%d %H:%M%z") for t in got] == [
        "30 09:00+0100", "31 09:00+0200", "01 09:00+0200", "02 09:00+0200"]
    got = ticks_after(s, paris(2024, 10, 25, 12), 4)
    assert [at(t, PARIS).strftime("%d %H:%M%z") for t in got] == [
        "26 09:00+0200", "27 09:00+0100", "28 09:00+0100", "29 09:00+0100"]


def test_fixed_time_skipped_by_spring_forward_ticks_once_shifted() -> None:
    s = parse_cron("TZ=Europe/Paris 30 2 * * *")
    got = ticks_after(s, paris(2024, 3, 30, 12), 2)
    # 02:30 does not exist on the 31st: it ticks at 03:30 CEST (02:30 at the old offset).
    assert got == [paris(2024, 3, 31, 3, 30), paris(2024, 4, 1, 2, 30)]
    assert s.latest_at_or_before(paris(2024, 4, 1, 0)) == paris(2024, 3, 31, 3, 30)
    assert s.latest_at_or_before(paris(2024, 3, 31, 3, 29)) == paris(2024, 3, 30, 2, 30)


def test_fixed_time_repeated_by_fall_back_ticks_once() -> None:
    s = parse_cron("TZ=Europe/Paris 30 2 * * *")
    first = paris(2024, 10, 27, 2, 30, fold=0)
    second = paris(2024, 10, 27, 2, 30, fold=1)
    assert second - first == 3_600_000
    assert ticks_after(s, paris(2024, 10, 26, 12), 2) == [first, paris(2024, 10, 28, 2, 30)]
    # From inside the repeated hour, the next tick is the next day's.
    assert s.next_after(paris(2024, 10, 27, 2, 10, fold=1)) == paris(2024, 10, 28, 2, 30)
    assert s.latest_at_or_before(second) == first
    assert s.latest_at_or_before(paris(2024, 10, 28, 0)) == first


def test_hourly_follows_real_time_across_both_changes() -> None:
    s = parse_cron("TZ=Europe/Paris 0 * * * *")
    spring = ticks_after(s, paris(2024, 3, 31, 0, 30), 3)
    assert [t - spring[0] for t in spring] == [0, 3_600_000, 7_200_000]
    assert at(spring[1], PARIS).hour == 3  # 02:00 does not exist
    fall = ticks_after(s, paris(2024, 10, 27, 1, 30), 4)
    # 02:00 happens twice and ticks twice: an hour apart, every hour.
    assert [t - fall[0] for t in fall] == [0, 3_600_000, 7_200_000, 10_800_000]
    assert [at(t, PARIS).strftime("%H%z") for t in fall] == [
        "02+0200", "02+0100", "03+0100", "04+0100"]
    assert s.latest_at_or_before(fall[2] - 1) == fall[1]
    assert s.latest_at_or_before(fall[1] - 1) == fall[0]


def test_every_quarter_hour_is_every_quarter_hour_in_real_time() -> None:
    s = parse_cron("TZ=Europe/Paris */15 * * * *")
    for start in (paris(2024, 3, 31, 1, 0), paris(2024, 10, 27, 1, 0)):
        got = ticks_after(s, start, 12)
        assert {b - a for a, b in itertools.pairwise(got)} == {900_000}


def test_paris_seconds_field() -> None:
    s = parse_cron("TZ=Europe/Paris 59 1 * * * 30")
    assert s.next_after(paris(2024, 3, 31, 0)) == paris(2024, 3, 31, 1, 59, 30)


# -- against a brute-force oracle ------------------------------------------------------


def oracle(schedule: CronSchedule, zone: ZoneInfo, start: datetime.datetime,
           hours: int) -> list[int]:
    """Every tick in the window by the definition (minute resolution, 5 fields)."""
    begin = int(start.timestamp()) // 60 * 60
    wall0 = datetime.datetime.fromtimestamp(begin, zone).replace(tzinfo=None)
    # Every matching wall time near the window (naive: croniter is exact without zones).
    walls = croniter(schedule.fields, wall0 - datetime.timedelta(hours=4))
    matching: set[datetime.datetime] = set()
    while not matching or max(matching) < wall0 + datetime.timedelta(hours=hours + 4):
        matching.add(walls.get_next(datetime.datetime))
    found: set[int] = set()
    if schedule.follows_real_time:
        # Real time: every moment whose wall time matches.
        for t in range(begin, begin + hours * 3600, 60):
            if datetime.datetime.fromtimestamp(t, zone).replace(tzinfo=None) in matching:
                found.add(t * 1000)
    else:
        # Wall time: each matching wall time once, at its first occurrence; a wall time
        # that does not exist at its old-offset moment (fold=0).
        found = {ms(wall.replace(tzinfo=zone, fold=0)) for wall in matching}
    lo, hi = begin * 1000, (begin + hours * 3600) * 1000
    return sorted(t for t in found if lo <= t < hi)


@pytest.mark.parametrize("fields", [
    "30 2 * * *", "0 * * * *", "*/20 * * * *", "10,50 2,3 * * *", "0 0 * * *",
    "15 1-4 * * *", "45 */2 * * *",
])
@pytest.mark.parametrize(("zone", "start"), [
    ("Europe/Paris", datetime.datetime(2024, 3, 30, 20)),
    ("Europe/Paris", datetime.datetime(2024, 10, 26, 20)),
    ("Australia/Lord_Howe", datetime.datetime(2024, 4, 6, 20)),  # 30-minute change
    ("America/Sao_Paulo", datetime.datetime(2018, 11, 3, 18)),  # midnight does not exist
    ("America/Sao_Paulo", datetime.datetime(2019, 2, 16, 18)),  # 23:00 twice
])
def test_matches_the_oracle_near_changes(fields: str, zone: str,
                                         start: datetime.datetime) -> None:
    tz = ZoneInfo(zone)
    s = parse_cron(f"TZ={zone} {fields}")
    begin = start.replace(tzinfo=tz)
    hours = 14
    expected = oracle(s, tz, begin, hours)
    window_end = ms(begin) + hours * 3_600_000
    probe = ms(begin) - ms(begin) % 60_000
    while probe < window_end - 3 * 3_600_000:
        i = bisect.bisect_right(expected, probe)
        if i < len(expected):
            assert s.next_after(probe) == expected[i], at(probe, tz)
        j = bisect.bisect_right(expected, probe) - 1
        if j >= 0:
            assert s.latest_at_or_before(probe) == expected[j], at(probe, tz)
        probe += 7 * 60_000  # every 7 minutes: lands on and between ticks


def test_samoa_skipped_day() -> None:
    # Pacific/Apia skipped 2011-12-30 entirely (-10 -> +14).
    apia = ZoneInfo("Pacific/Apia")
    s = parse_cron("TZ=Pacific/Apia 0 12 * * *")
    got = ticks_after(s, ms(datetime.datetime(2011, 12, 29, 13, tzinfo=apia)), 2)
    assert [at(t, apia).strftime("%d %H:%M") for t in got] == ["31 12:00", "01 12:00"]
    hourly = parse_cron("TZ=Pacific/Apia 0 * * * *")
    before = ms(datetime.datetime(2011, 12, 29, 23, 0, tzinfo=apia))
    assert hourly.next_after(before) - before == 3_600_000


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["30 2 * * *", "0 * * * *", "*/7 * * * *", "0 0 * * 0", "15 1-3 1 * *",
                     "0 */3 * * * 30", "@monthly"]),
    st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"]),
    st.integers(min_value=946_684_800_000, max_value=2_208_988_800_000),  # 2000 to 2040
)
def test_next_and_latest_agree(fields: str, zone: str, x: int) -> None:
    check_agree(fields, zone, x)


def check_agree(fields: str, zone: str, x: int) -> None:
    s = parse_cron(f"TZ={zone} {fields}")
    n = s.next_after(x)
    last = s.latest_at_or_before(x)
    assert last <= x < n
    assert s.latest_at_or_before(n) == n
    assert s.latest_at_or_before(n - 1) == last  # no tick between them
    assert s.next_after(last) == n
    assert n % 1000 == 0 and last % 1000 == 0


def transitions(zone: str, first_year: int = 2000, last_year: int = 2040) -> list[int]:
    """Moments (ms) where the zone's offset changes, found by day, then by bisection."""
    tz = ZoneInfo(zone)

    def offset(t: int) -> datetime.timedelta | None:
        return at(t, tz).utcoffset()

    out = []
    day = 86_400_000
    t = ms(datetime.datetime(first_year, 1, 1, tzinfo=UTC))
    end = ms(datetime.datetime(last_year, 1, 1, tzinfo=UTC))
    while t < end:
        if offset(t) != offset(t + day):
            lo, hi = t, t + day
            while hi - lo > 1000:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
            out.append(hi - hi % 1000)
        t += day
    return out


NEAR_CHANGES = [(zone, t) for zone in ("Europe/Paris", "America/New_York", "Australia/Lord_Howe")
                for t in transitions(zone)[::3]]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["30 2 * * *", "0 * * * *", "*/7 * * * *", "45 1,2 * * *",
                     "0 */3 * * * 30", "0 0 * * *", "59 23 * * *"]),
    st.sampled_from(NEAR_CHANGES),
    st.integers(min_value=-4 * 3_600_000, max_value=4 * 3_600_000),
)
def test_next_and_latest_agree_near_changes(fields: str, change: tuple[str, int],
                                            delta: int) -> None:
    zone, moment = change
    check_agree(fields, zone, moment + delta)
