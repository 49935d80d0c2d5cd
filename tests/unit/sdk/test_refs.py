"""The worker's side of large values: what a reference resolves to, and a task too
large to take failing its run instead of being dropped."""

from __future__ import annotations

import pytest

from sdk._refs import RefError, _memo_of, has_refs, oversized_task_report
from topics import records
from topics.codec import decode, encode
from topics.settings import KIB, Settings

ERROR = {"name": "E", "message": "m", "stack": ""}


def task(steps: dict[str, dict[str, object]] | None = None, app_id: str = "app",
         event_data: dict[str, object] | None = None) -> records.Task:
    event = {"name": "n", "data": event_data or {}, "id": "E1", "ts": 1}
    return records.Task(run_id="R1", fn_id="app-fn", app_id=app_id, seq=3, partition_key="PK",
                        event=event, events=[event], attempt=0, steps=steps or {},
                        step_attempts={}, ts=1)


def test_a_reference_resolves_to_the_outcome_it_names() -> None:
    rec = records.OutcomesReported(run_id="R1", task_seq=2, worker="w", ts=1, outcomes=[
        records.Outcome(op=records.STEP_COMPLETED, step_id="a", output="A"),
        records.Outcome(op=records.STEP_FAILED, step_id="b", error=ERROR, retriable=False)])
    t = task({"a": {"ref": [0, 5, 0]}, "b": {"ref": [0, 5, 1]}})
    assert has_refs(t)
    assert _memo_of(rec, 0, t, "a") == {"data": "A"}
    assert _memo_of(rec, 1, t, "b") == {"error": ERROR}
    resolved = records.WaitResolved(run_id="R1", wait_id="w", kind="step",
                                    event={"name": "x"}, ts=1)
    assert _memo_of(resolved, 0, t, "w") == {"data": {"name": "x"}}
    child = records.InvokeFinished(run_id="R1", step_id="i", child_run_id="C", output=[1],
                                   error=None, ts=1)
    assert _memo_of(child, 0, t, "i") == {"data": [1]}


@pytest.mark.parametrize("run_id,index,step_id", [("R2", 0, "a"), ("R1", 1, "a"),
                                                   ("R1", 0, "z")])
def test_a_reference_to_the_wrong_record_fails_the_run_for_good(
        run_id: str, index: int, step_id: str) -> None:
    rec = records.OutcomesReported(run_id=run_id, task_seq=2, worker="w", ts=1, outcomes=[
        records.Outcome(op=records.STEP_COMPLETED, step_id="a", output="A")])
    with pytest.raises(RefError) as err:
        _memo_of(rec, index, task(), step_id)
    outcome = err.value.outcome
    assert outcome.op == records.FUNCTION_FAILED and outcome.retriable is False
    assert outcome.error is not None and outcome.error["name"] == "StepOutputUnavailable"


def test_an_oversized_task_of_this_app_fails_its_run() -> None:
    settings = Settings(brokers="x", max_record_bytes=128 * KIB,
                        max_step_output_bytes=64 * KIB, max_event_bytes=64 * KIB)
    big = encode(task(event_data={"x": "y" * 150_000}))
    found = oversized_task_report(big, settings, "app", "w1")
    assert found is not None
    key, value = found
    report = decode(value)
    assert key == "PK" and isinstance(report, records.OutcomesReported)
    assert (report.run_id, report.task_seq, report.worker) == ("R1", 3, "w1")
    [o] = report.outcomes
    assert (o.op, o.retriable) == (records.FUNCTION_FAILED, False)
    assert o.error is not None and o.error["name"] == "TaskTooLarge"
    assert f"is {len(big)} bytes, over this worker's {128 * KIB}-byte" in o.error["message"]
    # Another app's task is that app's workers' to report; a task within limits, garbage,
    # or another record is nobody's.
    assert oversized_task_report(big, settings, "other", "w1") is None
    assert oversized_task_report(encode(task()), settings, "app", "w1") is None
    assert oversized_task_report(b"\xc1" * 200_000, settings, "app", "w1") is None
