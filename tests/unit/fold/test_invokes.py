"""The run fold's invokes: the parent waits for its child's output, error or timeout,
without Kafka."""

from __future__ import annotations

from engine.fold import apply
from tests.unit.fold.builders import of, report, requested
from tests.unit.memtables import MemTables
from topics.records import (
    FUNCTION_FAILED,
    STEP_INVOKE,
    Event,
    InvokeFinished,
    InvokeRequested,
    Outcome,
    Task,
    TimerFired,
)


def test_invoke_waits_for_the_child_and_memoizes_its_output_or_error() -> None:
    t = MemTables()
    apply(t, requested())
    emits = apply(t, report(1, Outcome(op=STEP_INVOKE, step_id="child", until_ms=None,
                                       invoke={"function_id": "app-child",
                                               "data": {"n": 1}})))
    [req] = of(emits, InvokeRequested)
    assert req.fn_id == "app-child" and req.data == {"n": 1}
    assert req.parent == {"run_id": "R1", "partition_key": "P", "step_id": "child"}
    child = t.runs["R1"]["waiting"]["child_run_id"]
    # A report from another child, or for another step, is ignored.
    assert apply(t, InvokeFinished(run_id="R1", step_id="child", child_run_id="other",
                                   output=1, error=None, ts=3000)) == []
    emits = apply(t, InvokeFinished(run_id="R1", step_id="child", child_run_id=child,
                                    output={"sum": 3}, error=None, ts=3000))
    [task] = of(emits, Task)
    assert task.steps["child"] == {"data": {"sum": 3}}

    t2 = MemTables()
    apply(t2, requested())
    apply(t2, report(1, Outcome(op=STEP_INVOKE, step_id="child", until_ms=None,
                                invoke={"function_id": "app-child", "data": {}})))
    child = t2.runs["R1"]["waiting"]["child_run_id"]
    err = {"name": "ValueError", "message": "no", "stack": ""}
    [task] = of(apply(t2, InvokeFinished(run_id="R1", step_id="child", child_run_id=child,
                                         output=None, error=err, ts=3000)), Task)
    assert task.steps["child"] == {"error": err}


def test_invoke_timeout_fails_the_step() -> None:
    t = MemTables()
    apply(t, requested())
    apply(t, report(1, Outcome(op=STEP_INVOKE, step_id="child", until_ms=5000,
                               invoke={"function_id": "app-child", "data": {}})))
    [task] = of(apply(t, TimerFired(run_id="R1", timer_id="invoke:1", due_ms=5000,
                                    ts=5000)), Task)
    assert task.steps["child"]["error"]["name"] == "InvokeTimeoutError"


def test_a_child_reports_its_end_to_the_parent_partition() -> None:
    t = MemTables()
    parent = {"run_id": "PARENT", "partition_key": "PK", "step_id": "s"}
    apply(t, requested(parent=parent))
    emits = apply(t, report(1, Outcome(op=FUNCTION_FAILED, retriable=False,
                                       error={"name": "E", "message": "m", "stack": ""})))
    [done] = [e for e in emits if isinstance(e.record, InvokeFinished)]
    assert done.topic == "runs" and done.key == "PK"
    assert done.record.run_id == "PARENT" and done.record.error["name"] == "E"
    names = [e.name for e in of(emits, Event)]
    assert names == ["stepstream/function.finished", "stepstream/function.failed"]
