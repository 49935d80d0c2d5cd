"""Throttle and rate-limit gates over the tables: queued FIFO behind a gate timer,
nothing dropped; over the rate limit, skipped."""

from __future__ import annotations

import heapq
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.flow import throttle
from engine.flow.rank import rank
from engine.store.memory import MemTables
from engine.store.partition import PartitionStore
from engine.store.view import BatchView
from tests.unit.flow.test_gcra import throttled_starts

GATE = "fn-1/acct-7"


def drive(tables: MemTables, arrivals: list[tuple[int, str, int]], limit: int,
          period_ms: int, burst: int) -> list[tuple[int, str]]:
    """Run ``(time, run_id, priority)`` arrivals through the gate as the fold would, gate
    timers included (a timer due at or before an arrival fires first); the starts."""
    started: list[tuple[int, str]] = []
    timers: list[int] = []
    for now, run, priority in [*sorted(arrivals), (10**12, "", 0)]:
        while timers and timers[0] <= now:
            due = heapq.heappop(timers)
            assert not timers, "one gate timer at a time"
            out, nxt = throttle.release_due(tables, GATE, due, limit, period_ms, burst)
            started += [(due, r) for r, _ in out]
            if nxt is not None:
                heapq.heappush(timers, nxt)
        if not run:
            break
        a = throttle.admit(tables, GATE, run, 1, rank(now, priority), now, limit,
                           period_ms, burst)
        if a.started:
            started.append((now, run))
        if a.timer_ms is not None:
            assert not timers
            heapq.heappush(timers, a.timer_ms)
    return started


def test_20_at_once_through_5_per_second_burst_1_start_200ms_apart_in_order() -> None:
    t = MemTables()
    runs = [f"R{i:02}" for i in range(20)]
    starts = drive(t, [(0, r, 0) for r in runs], 5, 1000, 1)
    assert starts == [(0, r) for r in runs[:6]] + [(200 * k, runs[5 + k]) for k in
                                                     range(1, 15)]


def test_a_newcomer_queues_behind_the_backlog_and_priority_moves_a_run_ahead() -> None:
    t = MemTables()
    assert throttle.admit(t, GATE, "A", 1, rank(0), 0, 1, 1000, 0).started
    assert throttle.admit(t, GATE, "B", 1, rank(10), 10, 1, 1000, 0).timer_ms == 1000
    assert throttle.admit(t, GATE, "B", 1, rank(10), 10, 1, 1000, 0) == throttle.Admission(
        False, None)  # a copy
    # B's timer (1000) fires late, at 1800. At 1500 GCRA would allow a start, but B
    # waits: C queues behind it. D (+600 s) goes ahead of both; E leaves (cancelled).
    assert throttle.admit(t, GATE, "C", 1, rank(1500), 1500, 1, 1000, 0).timer_ms is None
    assert not throttle.admit(t, GATE, "D", 1, rank(1600, 600), 1600, 1, 1000, 0).started
    assert not throttle.admit(t, GATE, "E", 1, rank(1700), 1700, 1, 1000, 0).started
    assert throttle.leave(t, GATE, "E") and not throttle.leave(t, GATE, "E")
    assert throttle.release_due(t, GATE, 1800, 1, 1000, 0) == ([("D", 1)], 2800)
    assert throttle.release_due(t, GATE, 2800, 1, 1000, 0) == ([("B", 1)], 3800)
    assert throttle.release_due(t, GATE, 3800, 1, 1000, 0) == ([("C", 1)], None)
    assert throttle.release_due(t, GATE, 4000, 1, 1000, 0) == ([], None)


def test_a_late_timer_starts_what_the_gate_allows_then() -> None:
    t = MemTables()
    for i in range(8):
        throttle.admit(t, GATE, f"R{i}", 1, i, 0, 2, 1000, 0)
    # Timer due at 500 fired late (3000): the stored time caught up, two go at once.
    out, nxt = throttle.release_due(t, GATE, 3000, 2, 1000, 0)
    assert out == [("R2", 1), ("R3", 1)] and nxt == 3500


def test_rate_limit_3_per_10s_over_the_tables_skips_7_of_10(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "runs-0")
    try:
        view = BatchView(store)
        allowed = [throttle.rate_limit(view, GATE, 1000, 3, 10_000).allowed
                   for _ in range(5)]
        view.commit(1)
        view = BatchView(store)
        allowed += [throttle.rate_limit(view, GATE, 2000 + i, 3, 10_000).allowed
                    for i in range(5)]
        assert allowed == [True] * 3 + [False] * 7
        assert throttle.rate_limit(view, GATE, 1000 + 3334, 3, 10_000).allowed
    finally:
        store.close()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40), st.integers(1, 5),
       st.sampled_from([1000, 3000]), st.integers(0, 2))
def test_the_gate_over_tables_starts_runs_as_the_pure_fifo_throttle_does(
        times: list[int], limit: int, period_ms: int, burst: int) -> None:
    times.sort()
    arrivals = [(now, f"R{i:03}", 0) for i, now in enumerate(times)]
    starts = drive(MemTables(), arrivals, limit, period_ms, burst)
    assert [r for _, r in starts] == [r for _, r, _ in arrivals]
    assert [s for s, _ in starts] == throttled_starts(times, limit, period_ms, burst)
