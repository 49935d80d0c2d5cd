"""Run size limits in the fold: state accounting, RunStateTooLarge, and tasks that stay
within what a worker accepts (large values by reference)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import fold
from engine.fold import Limits, Position, apply
from engine.fold.core import build_task, value_size
from tests.unit.memtables import MemTables
from topics.codec import encode
from topics.records import (
    FUNCTION_COMPLETED,
    FUNCTION_FAILED_EVENT,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_WAIT,
    Event,
    Outcome,
    OutcomesReported,
    RunRequested,
    Task,
    WaitResolved,
)
from topics.settings import MIB, Settings, SettingsError

EVENT = {"name": "big/run", "data": {"n": 1}, "id": "E1", "ts": 1000}
MB = 1_000_000


def requested() -> RunRequested:
    return RunRequested(run_id="R1", fn_id="big-fn", app_id="big", partition_key="R1",
                        event=EVENT, events=[EVENT], retries=0, backoff_base_ms=1000, ts=1000)


def report(seq: int, *outcomes: Outcome, ts: int = 2000) -> OutcomesReported:
    return OutcomesReported(run_id="R1", task_seq=seq, outcomes=list(outcomes), worker="w",
                            ts=ts)


def done(step_id: str, output: object) -> Outcome:
    return Outcome(op=STEP_COMPLETED, step_id=step_id, output=output)


def tasks(emits: list[fold.Emit]) -> list[Task]:
    return [e.record for e in emits if isinstance(e.record, Task)]


def blob(i: int, size: int = MB) -> str:
    return str(i) * size


def run_steps(t: MemTables, n: int, size: int, limits: Limits | None = None
              ) -> list[fold.Emit]:
    """Request a run and report ``n`` steps of ``size`` one by one; the last emits."""
    limits = limits or Limits()
    emits = apply(t, requested(), Position(0, 0), limits)
    for i in range(n):
        rec = report(i + 1, done(f"s{i}", blob(i, size)), ts=2000 + i)
        emits = apply(t, rec, Position(0, i + 1), limits)
    return emits


def test_state_counts_events_and_outputs_and_keeps_its_limits() -> None:
    t = MemTables()
    run_steps(t, 2, 1000, Limits(state_bytes=5 * MIB, task_bytes=2 * MIB))
    state = t.runs["R1"]
    assert state["limits"] == {"state_bytes": 5 * MIB, "task_bytes": 2 * MIB}
    event_size = value_size(EVENT)
    assert state["state_bytes"] == event_size + 2 * value_size(blob(0, 1000))
    # A later record applied under other limits does not change this run's.
    apply(t, report(3, done("s2", "x")), Position(0, 3), Limits(state_bytes=1))
    assert state["status"] == "running"


def test_nine_megabyte_outputs_travel_by_reference_within_the_task_limit() -> None:
    t = MemTables()
    [task] = tasks(run_steps(t, 9, MB))
    assert len(encode(task)) < Limits().task_bytes
    refs = {k: v["ref"] for k, v in task.steps.items() if "ref" in v}
    inline = {k for k, v in task.steps.items() if "data" in v}
    assert inline == {"s0"} and set(refs) == {f"s{i}" for i in range(1, 9)}
    # Each reference names the record that reported the step, and its outcome.
    assert refs["s5"] == [0, 6, 0]
    assert t.runs["R1"]["steps"]["s5"]["output"] == blob(5)


def test_small_outputs_stay_inline() -> None:
    t = MemTables()
    [task] = tasks(run_steps(t, 3, 100))
    assert task.steps == {f"s{i}": {"data": blob(i, 100)} for i in range(3)}


def test_output_over_the_state_limit_fails_the_run_naming_step_and_sizes() -> None:
    t = MemTables()
    limit = int(2.5 * MIB)
    emits = run_steps(t, 3, MB, Limits(state_bytes=limit))
    state = t.runs["R1"]
    assert state["status"] == "failed" and state["waiting"] is None
    error = state["error"]
    assert error["name"] == "RunStateTooLarge"
    size = value_size(blob(2))
    total = value_size(EVENT) + 3 * size
    assert error["message"].startswith(f"step 's2' output is {size} bytes")
    assert f"would be {total} bytes, over the {limit}-byte limit" in error["message"]
    step = state["steps"]["s2"]
    assert step["status"] == "failed" and step["output"] is None
    assert step["error"] == error
    assert state["state_bytes"] == total - size  # the output was not kept
    assert not tasks(emits)
    assert any(isinstance(e.record, Event) and e.record.name == FUNCTION_FAILED_EVENT
               for e in emits)


def test_function_output_over_the_state_limit_fails_the_run() -> None:
    t = MemTables()
    apply(t, requested(), Position(0, 0), Limits(state_bytes=MIB))
    apply(t, report(1, Outcome(op=FUNCTION_COMPLETED, output=blob(1, 1_100_000))),
          Position(0, 1))
    state = t.runs["R1"]
    assert (state["status"], state["error"]["name"]) == ("failed", "RunStateTooLarge")
    assert state["error"]["message"].startswith("the function's output is")
    assert state["output"] is None


def test_an_awaited_event_counts_and_goes_by_reference() -> None:
    t = MemTables()
    limits = Limits(task_bytes=MIB)  # inline budget 256 KiB
    apply(t, requested(), Position(0, 0), limits)
    apply(t, report(1, Outcome(op=STEP_WAIT, step_id="w", until_ms=99_000,
                               wait={"event": "big/ready"})), Position(0, 1))
    wait_id = t.runs["R1"]["waiting"]["wait_id"]
    event = {"name": "big/ready", "data": {"b": "x" * 300_000}, "id": "E2", "ts": 3000}
    emits = apply(t, WaitResolved(run_id="R1", wait_id=wait_id, kind="step", event=event,
                                  ts=3000), Position(0, 2))
    [task] = tasks(emits)
    assert task.steps == {"w": {"ref": [0, 2, 0]}}
    assert t.runs["R1"]["state_bytes"] == value_size(EVENT) + value_size(event)


def test_a_task_that_cannot_fit_fails_the_run_instead_of_being_sent() -> None:
    # Without positions nothing can go by reference; errors always travel inline.
    t = MemTables()
    limits = Limits(task_bytes=64 * 1024)
    apply(t, requested(), None, limits)
    apply(t, report(1, Outcome(op=STEP_FAILED, step_id="a", retriable=False,
                               error={"name": "E", "message": "m" * 70_000, "stack": ""})))
    state = t.runs["R1"]
    assert (state["status"], state["error"]["name"]) == ("failed", "TaskTooLarge")
    assert f"over the {64 * 1024}-byte record limit" in state["error"]["message"]
    assert [e["type"] for e in state["timeline"][-2:]] == ["step.errored", "run.failed"]


def test_every_task_stays_within_the_limit_however_outputs_accumulate() -> None:
    t = MemTables()
    limits = Limits(state_bytes=64 * MIB, task_bytes=2 * MIB)
    emits = apply(t, requested(), Position(3, 10), limits)
    sizes = [900_000, 10, 300_000, 1_500_000, 5, 700_000, 2_000, 1_000_000]
    for i, size in enumerate(sizes):
        rec = report(i + 1, done(f"s{i}", blob(i, size)), ts=2000 + i)
        emits = apply(t, rec, Position(3, 11 + i))
        [task] = tasks(emits)
        assert len(encode(task)) <= limits.task_bytes
    assert t.runs["R1"]["status"] == "running"


def test_replaying_the_same_positions_gives_the_same_state() -> None:
    a, b = MemTables(), MemTables()
    run_steps(a, 4, 400_000)
    run_steps(b, 4, 400_000)
    assert a.runs == b.runs


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=40),
                          st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1),
                                    st.text(max_size=3000),
                                    st.lists(st.floats(allow_nan=False), max_size=50)),
                          st.booleans()),
                min_size=1, max_size=12),
       st.booleans())
def test_the_task_size_bound_is_never_below_the_encoded_size(
        steps: list[tuple[str, object, bool]], positioned: bool) -> None:
    t = MemTables()
    apply(t, requested(), Position(0, 0) if positioned else None,
          Limits(task_bytes=16 * 1024))
    for i, (step_id, output, fails) in enumerate(steps):
        outcome = (Outcome(op=STEP_FAILED, step_id=step_id, retriable=False,
                           error={"name": "E", "message": str(output), "stack": ""})
                   if fails else done(step_id, output))
        apply(t, report(i + 1, outcome), Position(0, i + 1) if positioned else None)
        state = t.runs["R1"]
        if state["status"] != "running":
            break
        copy = {**state, "timeline": [], "task_seq": state["task_seq"] - 1}
        emit, bound = build_task(copy, 0, 16 * 1024)
        assert len(encode(emit.record)) <= bound


def test_limits_come_from_the_environment_and_must_fit_a_record() -> None:
    s = Settings.from_env({"STEPSTREAM_MAX_RUN_STATE_BYTES": "1000000"})
    assert (s.max_run_state_bytes, s.max_step_output_bytes) == (1_000_000, 4 * MIB)
    assert Limits.from_settings(s) == Limits(state_bytes=1_000_000, task_bytes=8 * MIB)
    with pytest.raises(SettingsError, match="must leave 65536 bytes"):
        Settings.from_env({"STEPSTREAM_MAX_STEP_OUTPUT_BYTES": str(8 * MIB)})
