"""The run fold's dedupe window and cron ticks: one run per key and per tick, without
Kafka."""

from __future__ import annotations

from engine.fold import apply
from tests.unit.fold.builders import of, requested
from tests.unit.memtables import MemTables
from topics.records import (
    DEDUPE_WINDOW_MS,
    Task,
)


def test_same_dedupe_key_starts_one_run_per_window() -> None:
    t = MemTables()
    key = "app-fn\x1fevent\x1fE1"
    apply(t, requested("R1", dedupe_key=key, ts=1000))
    assert apply(t, requested("R2", dedupe_key=key, ts=2000)) == []
    assert apply(t, requested("R3", dedupe_key=key, ts=3000)) == []
    assert set(t.runs) == {"R1"}
    kinds = [e["type"] for e in t.runs["R1"]["timeline"]]
    assert kinds.count("run.deduplicated") == 2
    # After the window the key is free again (and was removed from the tables).
    later = 1000 + DEDUPE_WINDOW_MS + 1
    assert of(apply(t, requested("R4", dedupe_key=key, ts=later)), Task)
    assert set(t.runs) == {"R1", "R4"}


def test_cron_tick_fired_twice_or_older_starts_one_run() -> None:
    t = MemTables()
    cron = {"cron": "* * * * *", "tick_ms": 60_000}
    apply(t, requested("C1", cron=cron, dedupe_key=None))
    assert apply(t, requested("C1b", cron=cron, dedupe_key=None)) == []
    assert apply(t, requested("C0", cron={**cron, "tick_ms": 0}, dedupe_key=None)) == []
    [task] = of(apply(t, requested("C2", cron={**cron, "tick_ms": 120_000},
                                   dedupe_key=None)), Task)
    assert task.cron_tick_ms == 120_000
    assert set(t.runs) == {"C1", "C2"}
