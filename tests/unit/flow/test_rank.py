"""A run's rank in a backlog: accepted time minus its priority, clipped to ±600 s."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.flow.rank import clip_priority, rank


@pytest.mark.parametrize(("priority", "seconds"), [
    (0, 0), (30, 30), (-30, -30), (600, 600), (601, 600), (-10**9, -600), (12.9, 12),
    (-12.9, -12), (float("inf"), 0), (float("nan"), 0), (True, 0), ("60", 0), (None, 0),
    ([5], 0),
])
def test_priority_is_whole_seconds_within_600_and_anything_else_counts_as_0(
        priority: object, seconds: int) -> None:
    assert clip_priority(priority) == seconds


def test_rank_is_accepted_time_minus_priority() -> None:
    assert rank(1_000_000) == 1_000_000
    assert rank(1_000_000, 600) == 400_000
    assert rank(1_000_000, -5000) == 1_600_000
    assert rank(1000, 600) == -599_000  # before the epoch: the key layout sorts it first


@given(st.integers(0, 2**45), st.integers(0, 2**45), st.integers(-700, 700))
def test_a_priority_moves_a_run_ahead_of_runs_accepted_up_to_that_many_seconds_before(
        earlier: int, later: int, priority: int) -> None:
    if later < earlier:
        earlier, later = later, earlier
    ahead = rank(later, priority) < rank(earlier)
    assert ahead == (later - earlier < clip_priority(priority) * 1000)
