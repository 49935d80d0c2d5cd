"""The run fold's ``run.requested``, without Kafka: the first task, and a request the
run already exists for."""

from __future__ import annotations

from engine.fold import apply
from tests.unit.fold.test_outcomes import only_task, requested
from tests.unit.memtables import MemTables


def test_requested_dispatches_first_task_and_indexes_event() -> None:
    t = MemTables()
    task = only_task(apply(t, requested()))
    assert (task.seq, task.steps, task.attempt) == (1, {}, 0)
    state = t.runs["R1"]
    assert state["status"] == "running" and state["started_at"] == 1000
    assert t.index == {("E1", "R1")}


def test_duplicate_request_is_ignored() -> None:
    t = MemTables()
    apply(t, requested())
    before = t.snapshot()
    assert apply(t, requested(ts=5000)) == []
    assert t.snapshot() == before
