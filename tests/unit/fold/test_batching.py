"""Batching and debounce in the run fold, without Kafka: a batch closes by size, by its
timer and by bytes; each event is in exactly one run; a debounce starts one run with the
latest event, capped by its timeout."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from engine.api.views import run_view, timeline_text
from engine.fold import Limits, apply
from engine.fold.batching import BATCH_TIMER, DEBOUNCE_TIMER, GATE_TIMER_RUN
from tests.unit.fold.builders import of
from tests.unit.memtables import MemTables
from topics.records import RunRequested, Task, TimerFired


def event(i: int, ts: int = 1000, **data: Any) -> dict[str, Any]:
    return {"name": "e", "data": {"i": i, **data}, "id": f"E{i}", "ts": ts}


def request(i: int, ts: int = 1000, ev_ts: int | None = None, **flow: Any) -> RunRequested:
    ev = event(i, ts if ev_ts is None else ev_ts)
    return RunRequested(run_id=f"R{i}", fn_id="app-fn", app_id="app", partition_key="app-fn",
                        event=ev, events=[ev], retries=0, backoff_base_ms=1000, ts=ts,
                        dedupe_key=f"app-fn\x1fevent\x1fE{i}", flow={"home": "app-fn", **flow})


def batch(max_size: int = 3, timeout_ms: int = 1000) -> dict[str, Any]:
    return {"batch": {"gate": "app-fn", "max_size": max_size, "timeout_ms": timeout_ms,
                      "key": None}}


def fire(t: MemTables, timer_id: str, due: int, limits: Limits | None = None) -> list[Any]:
    return apply(t, TimerFired(run_id=GATE_TIMER_RUN, timer_id=timer_id, due_ms=due,
                               ts=due), limits=limits or Limits())


def test_a_full_batch_starts_one_run_with_every_event_in_order() -> None:
    t = MemTables()
    assert of(apply(t, request(1, **batch())), Task) == []
    assert of(apply(t, request(2, 1001, **batch())), Task) == []
    [task] = of(apply(t, request(3, 1002, **batch())), Task)
    assert task.run_id == "R1"
    assert [e["id"] for e in task.events] == ["E1", "E2", "E3"]
    assert t.runs["R1"]["events"] == [event(1), event(2, 1001), event(3, 1002)]
    assert {("E1", "R1"), ("E2", "R1"), ("E3", "R1")} <= t.index
    assert set(t.runs) == {"R1"}
    assert list(t.timers) == []  # the batch's timer went with it
    # The API and `runs show` list the batch's events.
    assert run_view(t.runs["R1"])["event_ids"] == ["E1", "E2", "E3"]
    assert "events (3) E1, E2, E3" in render(timeline_text(t.runs["R1"]))
    # The next event opens a new batch.
    apply(t, request(4, 1003, **batch()))
    assert "R4" not in t.runs


def test_a_batch_closes_when_its_timer_fires() -> None:
    t = MemTables()
    apply(t, request(1, **batch()))
    apply(t, request(2, 1500, **batch()))
    [(due, run, timer_id)] = list(t.timers)
    assert (due, run, timer_id) == (2000, GATE_TIMER_RUN, BATCH_TIMER + "app-fn")
    [task] = of(fire(t, timer_id, due), Task)
    assert [e["id"] for e in task.events] == ["E1", "E2"]


def test_a_redelivered_event_is_in_no_second_run() -> None:
    t = MemTables()
    apply(t, request(1, **batch()))
    apply(t, request(1, 1100, **batch()))  # the router sent it twice
    apply(t, request(2, 1200, **batch()))
    [task] = of(fire(t, BATCH_TIMER + "app-fn", 2000), Task)
    assert [e["id"] for e in task.events] == ["E1", "E2"]


def test_a_batch_closes_before_it_would_outgrow_a_task() -> None:
    t = MemTables()
    small = Limits(task_bytes=8000)  # a cap of 7,000 bytes of events
    big = "x" * 3000
    for i in range(3):
        ev = event(i, blob=big)
        apply(t, RunRequested(run_id=f"R{i}", fn_id="app-fn", app_id="app",
                              partition_key="app-fn", event=ev, events=[ev], retries=0,
                              backoff_base_ms=1000, ts=1000 + i,
                              flow={"home": "app-fn", **batch(max_size=10)}), limits=small)
    assert [e["id"] for e in t.runs["R0"]["events"]] == ["E0", "E1"]
    assert "R2" not in t.runs  # it opened the next batch


def debounce(period_ms: int = 1000, timeout_ms: int | None = None,
             collect: bool = False) -> dict[str, Any]:
    return {"debounce": {"gate": "app-fn", "period_ms": period_ms, "timeout_ms": timeout_ms,
                         "collect": collect, "key": None}}


def test_a_debounce_starts_one_run_with_the_last_event_after_the_quiet_period() -> None:
    t = MemTables()
    apply(t, request(1, 1000, **debounce()))
    apply(t, request(2, 1500, **debounce()))
    apply(t, request(3, 1900, **debounce()))
    [(due, _, timer_id)] = list(t.timers)
    assert due == 2900  # each event restarted the wait
    assert of(fire(t, timer_id, 2000), Task) == []  # a moved timer: stale
    [task] = of(fire(t, timer_id, 2900), Task)
    assert task.run_id == "R1" and task.event["id"] == "E3"
    assert set(t.runs) == {"R1"}


def test_the_timeout_caps_the_delay_even_for_an_event_just_before_it() -> None:
    t = MemTables()
    apply(t, request(1, 1000, **debounce(period_ms=1000, timeout_ms=2500)))
    apply(t, request(2, 1900, **debounce(period_ms=1000, timeout_ms=2500)))
    apply(t, request(3, 3200, **debounce(period_ms=1000, timeout_ms=2500)))
    [(due, _, _)] = list(t.timers)
    assert due == 3500  # first + timeout, not 3200 + 1000
    [task] = of(fire(t, DEBOUNCE_TIMER + "app-fn", 3500), Task)
    assert task.event["id"] == "E3"


def test_an_older_event_is_ignored_and_collect_hands_over_the_window() -> None:
    t = MemTables()
    apply(t, request(1, 1000, ev_ts=5000, **debounce(collect=True)))
    apply(t, request(2, 1100, ev_ts=4000, **debounce(collect=True)))  # older ts
    apply(t, request(3, 1200, ev_ts=6000, **debounce(collect=True)))
    [task] = of(fire(t, DEBOUNCE_TIMER + "app-fn", 2200), Task)
    assert task.event["id"] == "E3"
    assert [e["id"] for e in t.runs["R1"]["events"]] == ["E1", "E3"]


def render(renderable: Any) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()
