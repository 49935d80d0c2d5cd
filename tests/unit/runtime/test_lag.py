"""Consumer lag arithmetic (engine.runtime.lag): per partition, summed per topic."""

from __future__ import annotations

from engine.runtime.lag import partition_lag, topic_lags


def test_a_partition_lags_by_its_end_minus_its_position() -> None:
    assert partition_lag(high=120, position=100, start=0) == 20
    assert partition_lag(high=100, position=100, start=0) == 0


def test_a_partition_not_consumed_since_assignment_counts_from_its_start() -> None:
    assert partition_lag(high=120, position=-1001, start=110) == 10


def test_an_unknown_end_or_start_is_unknown_not_zero() -> None:
    assert partition_lag(high=-1001, position=5, start=0) is None
    assert partition_lag(high=10, position=-1001, start=-1001) is None


def test_a_position_past_a_stale_end_is_no_negative_lag() -> None:
    assert partition_lag(high=90, position=100, start=0) == 0


def test_topics_sum_their_partitions_and_one_unknown_makes_the_topic_unknown() -> None:
    names = {"p.events": "events", "p.runs": "runs", "p.waits": "waits"}
    lags = topic_lags(names, [("p.events", 3), ("p.events", 4), ("p.runs", None),
                              ("p.runs", 2), ("p.other", 99)])
    assert lags == {"events": 7, "runs": None, "waits": 0}
