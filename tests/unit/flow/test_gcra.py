"""Throttle and rate limit (GCRA): spacing, bursts, skips, exact arithmetic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.flow.gcra import Decision, State, rate_limit, throttle


def throttled_starts(arrivals: list[int], limit: int, period_ms: int, burst: int
                     ) -> list[int]:
    """Start times of runs arriving at ``arrivals`` (sorted) through a throttle gate, as
    the fold drives it: a run that may not start waits, FIFO, for a gate timer at
    ``next_ms``; nothing is dropped."""
    state: State | None = None
    starts: list[int] = []
    clock = 0
    for arrived in arrivals:
        clock = max(clock, arrived)
        d = throttle(state, clock, limit, period_ms, burst)
        if not d.allowed:
            assert d.next_ms > clock and d.state == state
            clock = d.next_ms
            d = throttle(state, clock, limit, period_ms, burst)
            assert d.allowed, "refused again at the time the gate gave"
        state = d.state
        starts.append(clock)
    return starts


def test_throttle_5_per_second_burst_1_spaces_20_simultaneous_starts() -> None:
    # limit + burst = 6 go at once, then one every period / limit = 200 ms.
    assert throttled_starts([0] * 20, 5, 1000, 1) == [0] * 6 + [200 * k for k in range(1, 15)]


def test_throttle_as_inngest_documents_it() -> None:
    # "throttle: { limit: 2, period: '6s', burst: 1 }: six events arrive 0.5 s apart.
    # Three runs (limit + burst) start at once, then one run starts every 3 s."
    assert throttled_starts([0, 500, 1000, 1500, 2000, 2500], 2, 6000, 1) == [
        0, 500, 1000, 3000, 6000, 9000]


def test_rate_limit_3_per_10s_lets_3_of_10_simultaneous_starts_through() -> None:
    state: State | None = None
    decisions: list[Decision] = []
    for _ in range(10):
        d = rate_limit(state, 5000, 3, 10_000)
        state = d.state
        decisions.append(d)
    assert [d.allowed for d in decisions] == [True] * 3 + [False] * 7
    # One more may go a third of the period later; the whole limit once at rest again.
    assert decisions[-1].next_ms == 5000 + math.ceil(10_000 / 3)
    assert not rate_limit(state, 8333, 3, 10_000).allowed
    assert rate_limit(state, 8334, 3, 10_000).allowed
    assert decisions[-1].idle_ms == 15_000
    assert [rate_limit(state, 15_000, 3, 10_000).allowed for _ in range(1)] == [True]


def test_a_fractional_interval_never_drifts() -> None:
    # 3 per second: T = 333.33 ms. After the burst of 3, start k goes at ceil(k * T).
    starts = throttled_starts([0] * 3003, 3, 1000, 0)
    assert starts[:3] == [0, 0, 0]
    assert starts[3:] == [math.ceil(k * 1000 / 3) for k in range(1, 3001)]
    assert starts[-1] == 1_000_000


def test_a_limit_change_applies_to_the_stored_state() -> None:
    # Five starts of a 1-per-second throttle (no burst) stored; now 10 per second.
    state = None
    for now in range(0, 5000, 1000):
        state = throttle(state, now, 1, 1000, 0).state
    assert throttle(state, 4500, 1, 1000, 0).next_ms == 5000
    # The stored time (5000) leaves half of the new 1000 ms tolerance free: 5 go at
    # 4500, then one every 100 ms.
    allowed = 0
    while (d := throttle(state, 4500, 10, 1000, 0)).allowed:
        state = d.state
        allowed += 1
    assert (allowed, d.next_ms) == (5, 4600)


@pytest.mark.parametrize(("limit", "period_ms", "burst"),
                         [(0, 1000, 1), (1, 0, 1), (1, 1000, -1), (True, 1000, 1),
                          (1, 1000.5, 1)])
def test_bad_parameters_raise_a_clear_error(limit: int, period_ms: int, burst: int) -> None:
    with pytest.raises(ValueError, match=r"limit|period|burst"):
        throttle(None, 0, limit, period_ms, burst)


ARRIVALS = st.lists(st.integers(0, 20_000), min_size=1, max_size=60).map(sorted)


@settings(max_examples=200, deadline=None)
@given(ARRIVALS, st.integers(1, 6), st.sampled_from([1000, 3000, 7001]), st.integers(0, 3))
def test_throttle_queues_fifo_never_drops_and_bounds_every_window(
        arrivals: list[int], limit: int, period_ms: int, burst: int) -> None:
    starts = throttled_starts(arrivals, limit, period_ms, burst)
    assert len(starts) == len(arrivals)
    assert all(s >= a for s, a in zip(starts, arrivals, strict=True))
    assert starts == sorted(starts)
    # At most C + ceil(W / T) - 1 starts in any window of length W (here one period).
    bound = limit + burst + limit - 1
    for s in starts:
        assert sum(1 for x in starts if s <= x < s + period_ms) <= bound
    # And no run waits longer than GCRA says: one that waited would have been refused
    # a millisecond earlier.
    state: State | None = None
    for s, arrived in zip(starts, arrivals, strict=True):
        d = throttle(state, s, limit, period_ms, burst)
        assert d.allowed
        if s > arrived:
            assert not throttle(state, s - 1, limit, period_ms, burst).allowed
        state = d.state


@settings(max_examples=200, deadline=None)
@given(ARRIVALS, st.integers(1, 6), st.sampled_from([1000, 10_000]))
def test_rate_limit_skips_what_is_over_and_lets_limit_through_from_rest(
        arrivals: list[int], limit: int, period_ms: int) -> None:
    state: State | None = None
    allowed = []
    for now in arrivals:
        d = rate_limit(state, now, limit, period_ms)
        if d.allowed:
            allowed.append(now)
        else:
            assert d.state == state and d.next_ms > now
            assert rate_limit(state, d.next_ms, limit, period_ms).allowed
        state = d.state
    burst = [a for a in arrivals if a == arrivals[0]]
    assert allowed[:min(limit, len(burst))] == burst[:limit]
    for s in allowed:
        assert sum(1 for x in allowed if s <= x < s + period_ms) <= 2 * limit - 1
    # At rest (idle_ms passed), the state is the same as none.
    if state is not None:
        idle = math.ceil(state[0] / state[1])
        assert rate_limit(state, idle, limit, period_ms) == rate_limit(None, idle, limit,
                                                                        period_ms)
