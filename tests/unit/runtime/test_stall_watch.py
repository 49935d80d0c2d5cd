"""Stall reports: an input partition with records waiting that does not move, and a
processor loop that does not come round, are logged once each, with where it stands."""

from __future__ import annotations

import threading
from typing import Any

from engine.app import Engine
from engine.runtime.lag import ProgressWatch


def test_a_partition_standing_still_with_records_waiting_is_reported_once() -> None:
    w = ProgressWatch(after_s=30)
    assert w.observe("events", 3, 100, 5, now=0) is None
    assert w.observe("events", 3, 100, 5, now=29) is None
    said = w.observe("events", 3, 100, 7, now=31)
    assert said is not None and "events[3]" in said and "offset 100" in said
    assert "7 record(s) waiting" in said
    assert w.observe("events", 3, 100, 9, now=90) is None  # once per stall
    moved = w.observe("events", 3, 140, 0, now=95)
    assert moved is not None and "moves again after 95 s" in moved
    assert w.observe("events", 3, 140, 0, now=200) is None


def test_a_partition_assigned_again_is_timed_from_then() -> None:
    w = ProgressWatch(after_s=30)
    assert w.observe("runs", 1, 50, 4, now=0) is None
    w.forget("runs", 1)  # revoked, then assigned back much later at the same offset
    assert w.observe("runs", 1, 50, 4, now=500) is None
    assert w.observe("runs", 1, 50, 4, now=531) is not None


def test_an_idle_partition_is_not_a_stall() -> None:
    w = ProgressWatch(after_s=30)
    for now in (0, 40, 400):
        assert w.observe("runs", 0, 7, 0, now=now) is None
        assert w.observe("waits", 1, -1001, None, now=now) is None


class _Lag:
    def __init__(self) -> None:
        self.ago_ms = 0

    def report(self) -> dict[str, Any]:
        return {"events": 0, "sampled_ms_ago": self.ago_ms}


class _Processor:
    def __init__(self) -> None:
        self.lag = _Lag()


def test_a_processor_that_does_not_come_round_is_reported_with_its_stack() -> None:
    release = threading.Event()

    def stuck_in_a_call() -> None:
        release.wait(30)

    engine = Engine.__new__(Engine)
    engine.processor = _Processor()  # type: ignore[assignment]
    engine._stall_logged = False
    engine._thread = threading.Thread(target=stuck_in_a_call, daemon=True)
    engine._thread.start()
    try:
        assert engine.check_progress(after_s=30) is None
        engine.processor.lag.ago_ms = 31_000  # type: ignore[attr-defined]
        said = engine.check_progress(after_s=30)
        assert said is not None and "not come round for 31 s" in said
        assert "stuck_in_a_call" in said  # where the thread stands
        assert engine.check_progress(after_s=30) is None  # once
        engine.processor.lag.ago_ms = 100  # type: ignore[attr-defined]
        assert engine.check_progress(after_s=30) == "the processor is moving again"
    finally:
        release.set()
        engine._thread.join()
