"""The run fold's re-runs, without Kafka: a re-run begins with the original's events,
seeded with the kept steps, whatever dedupe key or cron tick the original held; the
link back is folded into the original once; replay gives the same state."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import pytest

from engine.fold import NotApplicable, apply
from tests.unit.fold.builders import TRIGGER, of, report, requested
from tests.unit.memtables import MemTables
from topics.records import (
    FUNCTION_FAILED,
    STEP_COMPLETED,
    Outcome,
    RerunLinked,
    RerunRunRequested,
    Task,
)

SECOND = {"name": "billing/invoice.created", "data": {"invoice_id": 43}, "id": "E9",
          "ts": 1500}


def rerun(run_id: str = "N1", of_run: str = "R1", ts: int = 9000,
          kept: dict[str, Any] | None = None, from_step: str | None = None,
          **kw: Any) -> RerunRunRequested:
    """What the router makes of a re-run of ``of_run`` (a request of the same function)."""
    base = asdict(requested(run_id, ts=ts))
    base.update({"dedupe_key": None, "partition_key": "Q", **kw})
    kept = kept or {}
    return RerunRunRequested(**base, rerun={
        "of": of_run, "of_key": "P", "from_step": from_step, "kept": kept,
        "kept_order": list(kept)})


def failed_original(t: MemTables) -> None:
    """R1: step a completed, step b completed, then the function failed for good."""
    apply(t, replace(requested(), retries=0))
    apply(t, report(1, Outcome(op=STEP_COMPLETED, step_id="a", name="a", output=1)))
    apply(t, report(2, Outcome(op=STEP_COMPLETED, step_id="b", name="b", output=2)))
    apply(t, report(3, Outcome(op=FUNCTION_FAILED, retriable=False,
                               error={"name": "E", "message": "m", "stack": ""})))
    assert t.runs["R1"]["status"] == "failed"


def test_a_rerun_begins_a_new_run_with_the_same_event_and_links_back() -> None:
    t = MemTables()
    failed_original(t)
    emits = apply(t, rerun())
    [task] = of(emits, Task)
    assert (task.run_id, task.event, task.steps) == ("N1", TRIGGER, {})
    [link] = [e for e in emits if isinstance(e.record, RerunLinked)]
    assert (link.topic, link.key) == ("runs", "P")
    assert (link.record.run_id, link.record.rerun_id) == ("R1", "N1")
    new = t.runs["N1"]
    assert new["rerun_of"] == "R1" and new["status"] == "running"
    assert ("E1", "N1") in t.index  # the event lists the re-run beside the original
    # The link, folded where the original lives: listed once, however often delivered.
    assert apply(t, link.record) == []
    assert t.runs["R1"]["reruns"] == ["N1"]
    before = t.snapshot()
    assert apply(t, link.record) == []
    assert t.snapshot() == before
    assert t.runs["R1"]["timeline"][-1]["type"] == "rerun.started"


def test_a_copy_of_the_rerun_request_starts_nothing() -> None:
    t = MemTables()
    apply(t, rerun())
    before = t.snapshot()
    assert apply(t, rerun(ts=9500)) == []
    assert t.snapshot() == before


def test_from_step_seeds_the_kept_steps_into_the_first_task() -> None:
    t = MemTables()
    failed_original(t)
    [task] = of(apply(t, rerun(kept={"a": {"name": "a", "output": 1}}, from_step="b")),
                Task)
    assert task.steps == {"a": {"data": 1}}
    new = t.runs["N1"]
    assert new["step_order"] == ["a"] and new["steps"]["a"]["status"] == "completed"
    assert new["timeline"][-2]["detail"] == {"run_id": "R1", "from_step": "b",
                                             "kept": ["a"]}
    # The new run goes on from there like any run: b is executed and recorded anew.
    apply(t, report(1, Outcome(op=STEP_COMPLETED, step_id="b", name="b", output=20),
                    run_id="N1"))
    assert t.runs["N1"]["step_order"] == ["a", "b"]
    assert t.runs["N1"]["steps"]["b"]["output"] == 20


def test_a_batch_rerun_carries_every_event_and_indexes_them() -> None:
    t = MemTables()
    [task] = of(apply(t, rerun(events=[TRIGGER, SECOND])), Task)
    assert task.events == [TRIGGER, SECOND]
    assert {("E1", "N1"), ("E9", "N1")} <= t.index


def test_a_held_dedupe_key_or_a_fired_cron_tick_does_not_stop_a_rerun() -> None:
    t = MemTables()
    cron = {"cron": "* * * * *", "tick_ms": 60_000}
    apply(t, requested(dedupe_key="app-fn\x1fkey\x1f42", cron=cron))
    emits = apply(t, rerun(cron=cron, dedupe_key="app-fn\x1fkey\x1f42"))
    [task] = of(emits, Task)
    assert task.cron_tick_ms == 60_000 and "N1" in t.runs


def test_a_link_to_an_unknown_run_is_not_applicable() -> None:
    with pytest.raises(NotApplicable):
        apply(MemTables(), RerunLinked(run_id="nope", rerun_id="N1", from_step=None, ts=1))


def test_replay_of_a_rerun_history_gives_the_same_state() -> None:
    def fold() -> Any:
        t = MemTables()
        failed_original(t)
        emits = apply(t, rerun(kept={"a": {"name": "a", "output": 1}}, from_step="b"))
        for e in emits:
            if isinstance(e.record, RerunLinked):
                apply(t, e.record)
        return t.snapshot()

    assert fold() == fold()


def test_a_rerun_goes_through_the_functions_flow_control() -> None:
    t = MemTables()
    flow = {"home": "Q", "rate_limit": {"gate": "app-fn", "limit": 1, "period_ms": 60_000,
                                        "key": None}}
    assert of(apply(t, rerun("N1", flow=flow)), Task)
    # A second re-run within the period is rate limited like any run of the function.
    assert of(apply(t, rerun("N2", ts=9001, flow=flow)), Task) == []
    assert t.runs["N2"]["status"] == "skipped"
    assert t.runs["N2"]["error"]["name"] == "RateLimited"
