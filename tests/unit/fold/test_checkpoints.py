"""Checkpoints (``outcomes.reported`` with ``more``): the steps of a pass a worker ran
ahead, recorded before the pass's last report. No Kafka: the fold against memory tables.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.fold import NotApplicable, apply
from engine.fold.cancel import on_run_cancel
from tests.unit.fold.builders import of, requested
from tests.unit.memtables import MemTables
from topics.records import (
    FUNCTION_COMPLETED,
    STEP_COMPLETED,
    STEP_SLEEP,
    CancelRequested,
    Outcome,
    OutcomesReported,
    Task,
    TaskCancelled,
)


def done(step_id: str, output: Any = None) -> Outcome:
    return Outcome(op=STEP_COMPLETED, step_id=step_id, name=step_id,
                   output=step_id.upper() if output is None else output,
                   started_at=1500, ended_at=1501)


def checkpoint(*outcomes: Outcome, seq: int = 1, ts: int = 2000) -> OutcomesReported:
    return OutcomesReported(run_id="R1", task_seq=seq, outcomes=list(outcomes), worker="w",
                            ts=ts, more=True)


def last(*outcomes: Outcome, seq: int = 1, ts: int = 2100) -> OutcomesReported:
    return OutcomesReported(run_id="R1", task_seq=seq, outcomes=list(outcomes), worker="w",
                            ts=ts)


# A pass over a three-step function: a and b checkpointed, c with the function's end.
PASS = [checkpoint(done("a"), ts=2000), checkpoint(done("b"), ts=2010),
        last(done("c"), Outcome(op=FUNCTION_COMPLETED, output=[1, 2, 3]), ts=2020)]


def started() -> MemTables:
    t = MemTables()
    apply(t, requested())
    return t


def test_a_checkpoint_records_its_steps_and_the_run_keeps_waiting_for_the_same_task() -> None:
    t = started()
    emits = apply(t, PASS[0])
    assert emits == []  # no next task: the worker goes on by itself
    state = t.get_run("R1")
    assert state is not None
    assert state["steps"]["a"]["status"] == "completed"
    assert state["steps"]["a"]["output"] == "A"
    assert state["waiting"] == {"kind": "task", "seq": 1}
    assert state["status"] == "running"


def test_the_pass_s_last_report_ends_it_like_any_report() -> None:
    t = started()
    for rec in PASS:
        apply(t, rec)
    state = t.get_run("R1")
    assert state is not None
    assert state["status"] == "completed" and state["output"] == [1, 2, 3]
    assert state["step_order"] == ["a", "b", "c"]
    assert [e["type"] for e in state["timeline"]].count("task.dispatched") == 1


def test_a_pass_ending_at_a_sleep_dispatches_the_next_task_after_it() -> None:
    t = started()
    apply(t, checkpoint(done("a")))
    apply(t, last(done("b"), Outcome(op=STEP_SLEEP, step_id="nap", until_ms=9000)))
    state = t.get_run("R1")
    assert state is not None
    assert state["waiting"] is not None and state["waiting"]["kind"] == "timer"
    assert state["steps"]["a"]["status"] == state["steps"]["b"]["status"] == "completed"


@pytest.mark.parametrize("op", ["step.failed", "step.sleep", "step.wait", "step.invoke",
                                "function.completed", "function.failed"])
def test_a_checkpoint_holds_only_completed_steps(op: str) -> None:
    t = started()
    before = t.snapshot()
    bad = Outcome(op=op, step_id="x", until_ms=5000, error={"name": "E", "message": ""},
                  wait={"event": "e"}, invoke={"function_id": "f"})
    with pytest.raises(NotApplicable, match=r"only step\.completed"):
        apply(t, checkpoint(done("a"), bad))
    assert t.snapshot() == before


def test_more_must_be_a_boolean() -> None:
    t = started()
    rec = checkpoint(done("a"))
    rec.more = "yes"  # type: ignore[assignment]
    with pytest.raises(NotApplicable, match="boolean"):
        apply(t, rec)


def test_a_checkpoint_for_another_task_changes_nothing() -> None:
    t = started()
    before = t.snapshot()
    assert apply(t, checkpoint(done("a"), seq=2)) == []
    assert t.snapshot() == before


def test_a_cancel_while_a_task_is_out_tells_its_worker_and_late_checkpoints_are_noted() -> None:
    t = started()
    apply(t, PASS[0])
    emits = on_run_cancel(t, CancelRequested(run_id="R1", by={"kind": "api"}, ts=2005),
                          None, None)  # type: ignore[arg-type]
    [told] = of(emits, TaskCancelled)
    assert (told.run_id, told.app_id, told.task_seq) == ("R1", "app", 1)
    apply(t, PASS[1])
    apply(t, PASS[2])
    state = t.get_run("R1")
    assert state is not None and state["status"] == "cancelled"
    assert "b" not in state["steps"] and "c" not in state["steps"]
    [ignored] = [e for e in state["timeline"] if e["type"] == "outcome.ignored"]
    assert ignored["detail"]["steps"] == ["b", "c"]
    assert ignored["detail"]["last_report"] is True


def test_a_cancel_of_a_sleeping_run_sends_no_task_cancelled() -> None:
    t = started()
    apply(t, last(Outcome(op=STEP_SLEEP, step_id="nap", until_ms=9000)))
    emits = on_run_cancel(t, CancelRequested(run_id="R1", by={"kind": "api"}, ts=2005),
                          None, None)  # type: ignore[arg-type]
    assert of(emits, TaskCancelled) == []


def clean_state() -> bytes:
    t = started()
    for rec in PASS:
        apply(t, rec)
    return t.snapshot()


@given(st.lists(st.tuples(st.integers(0, len(PASS) - 1), st.integers(0, len(PASS))),
                max_size=8))
def test_re_delivered_reports_of_a_pass_change_nothing(copies: list[tuple[int, int]]) -> None:
    """Kafka delivers a pass's reports in the order they were produced (each is
    acknowledged before the next is sent), but a producer retry or a re-read can repeat
    any of them later: a copy of report ``i`` re-delivered after report ``j`` (``j >= i``)
    changes nothing, wherever it lands, and the tasks emitted are the same."""
    t = started()
    stream: list[OutcomesReported] = []
    for index, rec in enumerate(PASS):
        stream.append(rec)
        stream.extend(PASS[i] for i, after in copies if after == index and i <= index)
    stream.extend(PASS[i] for i, after in copies if after == len(PASS))
    tasks = []
    for rec in stream:
        tasks.extend(of(apply(t, rec), Task))
    assert t.snapshot() == clean_state()
    assert tasks == []
