"""The processor folds a runs/waits partition only up to a missing offset and reads it
again from there (a broker once made a later batch readable before an earlier one, and
three runs never began); a gap that stays, or lies below the log's start, is passed."""

from __future__ import annotations

from typing import Any

import pytest

from engine.runtime import gaps
from engine.runtime.gaps import GapGuard


class Msg:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


class Consumer:
    def __init__(self, low: int = 0) -> None:
        self.low = low
        self.seeks: list[tuple[str, int, int]] = []

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        return self.low, 10_000


def bare(consumer: Consumer) -> GapGuard:
    return GapGuard(consumer)  # type: ignore[arg-type]


def offsets(msgs: list[Any]) -> list[int]:
    return [m.offset() for m in msgs]


def test_contiguous_records_are_all_folded() -> None:
    p = bare(Consumer())
    msgs = [Msg(o) for o in (3, 4, 5, 6)]  # 3 was applied before: the fold skips it
    assert offsets(p.up_to_a_gap("runs", 1, msgs, 4)) == [3, 4, 5, 6]
    assert p.consumer.seeks == []  # type: ignore[attr-defined]


def test_records_past_a_missing_offset_wait_and_the_partition_is_read_again() -> None:
    p = bare(Consumer())
    msgs = [Msg(o) for o in (10, 11, 15, 16)]
    assert offsets(p.up_to_a_gap("runs", 1, msgs, 10)) == [10, 11]
    assert p.consumer.seeks == [("runs", 1, 12)]  # type: ignore[attr-defined]
    assert offsets(p.up_to_a_gap("runs", 1, [Msg(15)], 12)) == []
    # The missing records arrive: all is folded, the gap is forgotten.
    assert offsets(p.up_to_a_gap("runs", 1, [Msg(o) for o in (12, 13, 14, 15)], 12)) == [
        12, 13, 14, 15]
    assert p.gaps == {}


def test_a_gap_below_the_log_start_or_that_stays_is_passed(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    p = bare(Consumer(low=50))  # retention removed everything before 50
    assert offsets(p.up_to_a_gap("waits", 0, [Msg(50), Msg(51)], 0)) == [50, 51]
    p = bare(Consumer())
    assert p.up_to_a_gap("runs", 2, [Msg(9)], 5) == []
    monkeypatch.setattr(gaps, "GAP_WAIT_S", -1.0)  # waited long enough
    assert offsets(p.up_to_a_gap("runs", 2, [Msg(9)], 5)) == [9]


def test_an_events_partition_is_routed_only_up_to_a_missing_offset() -> None:
    # Skipping an event loses its runs as silently as skipping a run.requested did.
    p = bare(Consumer())
    p.assigned("events", 2, 100)  # read from its committed offset
    assert offsets(p.events_up_to_a_gap("events", 2, [Msg(100), Msg(101)])) == [100, 101]
    assert offsets(p.events_up_to_a_gap("events", 2, [Msg(105), Msg(106)])) == []
    assert p.consumer.seeks == [("events", 2, 102)]  # type: ignore[attr-defined]
    assert offsets(p.events_up_to_a_gap("events", 2, [Msg(o) for o in range(102, 107)])) == [
        102, 103, 104, 105, 106]
    assert p.routed_to[("events", 2)] == 107 and p.gaps == {}


def test_an_events_partition_with_nothing_committed_is_read_from_offset_0() -> None:
    # auto.offset.reset=earliest: the consumer starts at the log's start, so the guard
    # holds its first fetch to offset 0 too (fresh topics are where gaps were seen).
    p = bare(Consumer())
    p.assigned("events", 0, None)
    assert offsets(p.events_up_to_a_gap("events", 0, [Msg(3), Msg(4)])) == []
    assert p.consumer.seeks == [("events", 0, 0)]  # type: ignore[attr-defined]
    assert offsets(p.events_up_to_a_gap("events", 0, [Msg(o) for o in range(5)])) == [
        0, 1, 2, 3, 4]
    # Past retention the log starts later: that gap is passed at once, and logged.
    p.revoked("events", 0)
    p.assigned("events", 0, None)
    p.consumer.low = 40  # type: ignore[attr-defined]
    assert offsets(p.events_up_to_a_gap("events", 0, [Msg(40), Msg(41)])) == [40, 41]
    # A reset position (below what was routed) is read as it comes, as before the guard.
    p.revoked("events", 0)
    p.assigned("events", 0, 50)
    assert offsets(p.events_up_to_a_gap("events", 0, [Msg(0), Msg(1)])) == [0, 1]


def test_a_revoked_partitions_gap_is_timed_afresh_when_it_comes_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(gaps.time, "monotonic", lambda: clock[0])
    p = bare(Consumer())
    assert p.up_to_a_gap("runs", 3, [Msg(12)], 10) == []
    p.revoked("runs", 3)
    clock[0] += 60  # owned elsewhere meanwhile; back with the same offset to read
    assert p.up_to_a_gap("runs", 3, [Msg(12)], 10) == []  # waited for, not passed
    assert len(p.consumer.seeks) == 2  # type: ignore[attr-defined]


def test_a_broker_that_does_not_say_where_the_log_starts_does_not_stop_the_engine(
        ) -> None:
    from confluent_kafka import KafkaException

    class Slow(Consumer):
        def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool
                                  ) -> tuple[int, int]:
            raise KafkaException("timed out")
    p = bare(Slow())
    assert p.up_to_a_gap("events", 1, [Msg(12)], 10) == []
    assert p.consumer.seeks == [("events", 1, 10)]  # type: ignore[attr-defined]
