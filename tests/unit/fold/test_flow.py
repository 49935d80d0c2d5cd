"""Flow control in the run fold, without Kafka: concurrency slots claimed at hand-over and
released after each record, and the start gates (rate limit, singleton, throttle)."""

from __future__ import annotations

from typing import Any

from engine.fold import apply
from engine.fold.admission import GATE_TIMER_RUN, THROTTLE_TIMER
from engine.store import keys
from tests.unit.fold.builders import TRIGGER, of
from tests.unit.memtables import MemTables
from topics.records import (
    FUNCTION_COMPLETED,
    STEP_SLEEP,
    CancelRequested,
    Outcome,
    OutcomesReported,
    RunRequested,
    Task,
    TimerFired,
)


def request(run_id: str, ts: int = 1000, key: str | None = None, **flow: Any
            ) -> RunRequested:
    return RunRequested(run_id=run_id, fn_id="app-fn", app_id="app", partition_key="app-fn",
                        event={**TRIGGER, "id": f"E-{run_id}"}, events=[], retries=0,
                        backoff_base_ms=1000, ts=ts, flow={"home": "app-fn", **flow})


def limit(n: int, gate: str = "app-fn", mode: str = "step") -> dict[str, Any]:
    return {"concurrency": [{"gate": gate, "limit": n, "mode": mode, "key": None,
                             "scope": "fn"}]}


def finish(run_id: str, seq: int = 1, ts: int = 2000) -> OutcomesReported:
    return OutcomesReported(run_id=run_id, task_seq=seq, worker="w", ts=ts,
                            outcomes=[Outcome(op=FUNCTION_COMPLETED, output=None)])


def tasks(emits: list[Any]) -> list[str]:
    return [t.run_id for t in of(emits, Task)]


def test_a_full_gate_queues_and_a_release_dispatches_the_head() -> None:
    t = MemTables()
    assert tasks(apply(t, request("R1", **limit(2)))) == ["R1"]
    assert tasks(apply(t, request("R2", 1001, **limit(2)))) == ["R2"]
    assert tasks(apply(t, request("R3", 1002, **limit(2)))) == []
    assert tasks(apply(t, request("R4", 1003, **limit(2)))) == []
    assert t.runs["R3"]["waiting"]["kind"] == "slot"
    assert t.runs["R3"]["status"] == "queued"
    # R1 ends: its slot goes to R3 (the head), not R4.
    assert tasks(apply(t, finish("R1"))) == ["R3"]
    types = [e["type"] for e in t.runs["R3"]["timeline"]]
    assert types.index("slot.queued") < types.index("slot.granted")
    assert tasks(apply(t, finish("R2"))) == ["R4"]


def test_a_sleeping_run_gives_its_slot_back_and_claims_one_when_it_wakes() -> None:
    t = MemTables()
    apply(t, request("R1", **limit(1)))
    apply(t, request("R2", 1001, **limit(1)))
    sleep = OutcomesReported(run_id="R1", task_seq=1, worker="w", ts=2000, outcomes=[
        Outcome(op=STEP_SLEEP, step_id="nap", until_ms=5000)])
    assert tasks(apply(t, sleep)) == ["R2"]  # R1 sleeps: R2 gets the slot
    timer_id = t.runs["R1"]["waiting"]["timer_id"]
    # R1 wakes while R2 holds the slot: it queues.
    assert tasks(apply(t, TimerFired(run_id="R1", timer_id=timer_id, due_ms=5000,
                                     ts=5000))) == []
    assert t.runs["R1"]["waiting"]["kind"] == "slot"
    assert tasks(apply(t, finish("R2", ts=6000))) == ["R1"]


def test_run_mode_keeps_the_slot_across_a_sleep() -> None:
    t = MemTables()
    apply(t, request("R1", **limit(1, mode="run")))
    apply(t, request("R2", 1001, **limit(1, mode="run")))
    sleep = OutcomesReported(run_id="R1", task_seq=1, worker="w", ts=2000, outcomes=[
        Outcome(op=STEP_SLEEP, step_id="nap", until_ms=5000)])
    assert tasks(apply(t, sleep)) == []
    assert t.runs["R2"]["waiting"]["kind"] == "slot"


def test_a_cancelled_queued_run_leaves_the_backlog() -> None:
    t = MemTables()
    apply(t, request("R1", **limit(1)))
    apply(t, request("R2", 1001, **limit(1)))
    apply(t, request("R3", 1002, **limit(1)))
    apply(t, CancelRequested(run_id="R2", by={"kind": "api"}, ts=1500))
    assert t.runs["R2"]["status"] == "cancelled"
    assert tasks(apply(t, finish("R1"))) == ["R3"]
    apply(t, finish("R3", ts=3000))
    # Idle again: the gate is gone, nothing leaks.
    assert keys.gate_key("concurrency", "app-fn") not in t.values
    assert not [k for k in t.values if k.startswith((keys.BACKLOG, keys.PLACE))]


def test_priority_moves_a_run_ahead_in_the_backlog() -> None:
    t = MemTables()
    apply(t, request("R1", **limit(1)))
    apply(t, request("R2", 1001, **limit(1)))
    apply(t, request("R3", 1002, priority=600, **limit(1)))
    assert tasks(apply(t, finish("R1"))) == ["R3"]


def test_the_rate_limit_skips_runs_over_it() -> None:
    t = MemTables()
    rate = {"rate_limit": {"gate": "app-fn", "limit": 2, "period_ms": 10_000, "key": None}}
    started = [tasks(apply(t, request(f"R{i}", 1000 + i, **rate))) for i in range(5)]
    assert started == [["R0"], ["R1"], [], [], []]
    skipped = t.runs["R2"]
    assert skipped["status"] == "skipped"
    assert skipped["error"]["name"] == "RateLimited"
    assert ("E-R2", "R2") in t.index  # the event's runs list shows the skip
    # A period later, one more may start.
    assert tasks(apply(t, request("R9", 6100, **rate))) == ["R9"]


def test_singleton_skip_and_cancel() -> None:
    t = MemTables()
    skip = {"singleton": {"gate": "app-fn", "mode": "skip", "key": None}}
    apply(t, request("R1", **skip))
    assert tasks(apply(t, request("R2", 1001, **skip))) == []
    assert t.runs["R2"]["error"]["name"] == "SingletonSkipped"
    apply(t, finish("R1"))
    assert tasks(apply(t, request("R3", 3000, **skip))) == ["R3"]

    t = MemTables()
    cancel = {"singleton": {"gate": "app-fn", "mode": "cancel", "key": None}}
    apply(t, request("R1", **cancel))
    assert tasks(apply(t, request("R2", 1001, **cancel))) == ["R2"]
    assert t.runs["R1"]["status"] == "cancelled"
    assert t.runs["R1"]["cancelled_by"] == {"kind": "singleton", "run_id": "R2"}


def test_the_throttle_queues_and_its_timer_starts_runs_as_gcra_allows() -> None:
    t = MemTables()
    gate = {"throttle": {"gate": "app-fn", "limit": 1, "period_ms": 1000, "burst": 1,
                         "key": None}}
    started = [tasks(apply(t, request(f"R{i}", 1000, **gate))) for i in range(4)]
    # Capacity limit + burst = 2 at once; the rest wait for the gate's timer.
    assert started == [["R0"], ["R1"], [], []]
    assert t.runs["R2"]["waiting"]["kind"] == "throttle"
    [(due, run, timer_id)] = list(t.timers)
    assert (run, timer_id) == (GATE_TIMER_RUN, THROTTLE_TIMER + "app-fn")
    assert due == 2000
    assert apply(t, TimerFired(run_id=run, timer_id=timer_id, due_ms=due, ts=1999)) == []
    assert tasks(apply(t, TimerFired(run_id=run, timer_id=timer_id, due_ms=due,
                                     ts=2000))) == ["R2"]
    [(due, _, _)] = list(t.timers)
    assert due == 3000
    assert tasks(apply(t, TimerFired(run_id=run, timer_id=timer_id, due_ms=due,
                                     ts=3000))) == ["R3"]
    assert list(t.timers) == []
