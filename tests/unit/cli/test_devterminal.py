"""The dev terminal's lines, from records alone (no broker)."""

from __future__ import annotations

from engine.cli.devterminal import RunReporter
from topics.records import (
    FUNCTION_CANCELLED_EVENT,
    FUNCTION_FAILED,
    FUNCTION_FAILED_EVENT,
    FUNCTION_FINISHED,
    STEP_COMPLETED,
    STEP_FAILED,
    Event,
    FunctionRegistered,
    Outcome,
    OutcomesReported,
    RunRequested,
    Task,
)

ERROR = {"name": "ConnectionError", "message": "payment\nprovider timed out", "stack": "..."}


def task(seq: int, *, attempt: int = 0, step_attempts: dict[str, int] | None = None) -> Task:
    return Task(run_id="R1", fn_id="shop-charge", app_id="shop", seq=seq, partition_key="R1",
                event={}, events=[], attempt=attempt, steps={},
                step_attempts=step_attempts or {}, ts=1_000)


def failed(seq: int, op: str = STEP_FAILED, *, retriable: bool = True) -> OutcomesReported:
    return OutcomesReported(run_id="R1", task_seq=seq, worker="w", ts=2_000, outcomes=[
        Outcome(op=STEP_COMPLETED, step_id="validate", output=1),
        Outcome(op=op, step_id="charge" if op == STEP_FAILED else None, error=ERROR,
                retriable=retriable)])


def requested(retries: int) -> RunRequested:
    return RunRequested(run_id="R1", fn_id="shop-charge", app_id="shop", partition_key="R1",
                        event={}, events=[], retries=retries, backoff_base_ms=1000, ts=0)


def test_a_failed_step_with_retries_left_is_one_retrying_line_with_its_attempt() -> None:
    r = RunReporter()
    r.feed(requested(2))
    r.feed(task(1, step_attempts={"charge": 1}))
    [line] = r.feed(failed(1))
    assert (line.kind, line.fn_id, line.run_id) == ("retrying", "shop-charge", "R1")
    # One line, whatever newlines the error message holds.
    assert line.detail == ("step 'charge' failed (attempt 2 of 3): "
                           "ConnectionError: payment provider timed out")
    assert "\n" not in line.text()


def test_the_last_attempt_or_a_non_retriable_error_says_no_more_retries() -> None:
    r = RunReporter()
    r.feed(requested(2))
    r.feed(task(3, step_attempts={"charge": 2}))
    [last] = r.feed(failed(3))
    assert last.kind == "step failed"
    assert last.detail.startswith("step 'charge' failed (attempt 3 of 3), no retries left: ")
    r.feed(task(4, step_attempts={"charge": 0}))
    [fatal] = r.feed(failed(4, retriable=False))
    assert fatal.kind == "step failed"
    assert fatal.detail.startswith("step 'charge' failed, not retriable: ConnectionError")


def test_retries_come_from_the_registry_when_the_request_was_not_seen() -> None:
    r = RunReporter()
    r.feed(FunctionRegistered(fn_id="shop-charge", app_id="shop", name="charge", triggers=[],
                              retries=1, ts=0))
    r.feed(task(1, attempt=0))
    [line] = r.feed(failed(1, FUNCTION_FAILED))
    assert line.kind == "retrying" and line.detail.startswith("function failed (attempt 1 of 2)")
    # The function's last attempt: no line here, the run's failed event gives it.
    r.feed(task(2, attempt=1))
    assert r.feed(failed(2, FUNCTION_FAILED)) == []


def test_a_failure_of_a_task_never_seen_still_gets_a_line_without_a_count() -> None:
    [line] = RunReporter().feed(failed(9))
    assert line.kind == "step failed" and line.fn_id == "?" and "attempt" not in line.detail


def ending(name: str, error: dict[str, str], event_id: str = "E1") -> Event:
    return Event(name=name, id=event_id, ts=3_000, data={
        "function_id": "shop-charge", "run_id": "R1", "status": "x", "error": error})


def test_failed_and_cancelled_runs_get_one_line_each_even_if_the_event_comes_twice() -> None:
    r = RunReporter()
    [f] = r.feed(ending(FUNCTION_FAILED_EVENT, ERROR))
    assert (f.kind, f.detail) == ("failed", "ConnectionError: payment provider timed out")
    assert r.feed(ending(FUNCTION_FAILED_EVENT, ERROR)) == []
    cancel = ending(FUNCTION_CANCELLED_EVENT, {"name": "RunCancelled"}, "E2")
    cancel.data["cancelled_by"] = {"kind": "api", "reason": "refund"}
    [c] = r.feed(cancel)
    assert (c.kind, c.run_id, c.detail) == ("cancelled", "R1", "through the API: refund")
    assert r.feed(ending(FUNCTION_FINISHED, ERROR, "E3")) == []


def test_long_messages_are_cut_to_one_short_line() -> None:
    [f] = RunReporter().feed(ending(FUNCTION_FAILED_EVENT, {"name": "E", "message": "x" * 5000}))
    assert len(f.detail) <= 200 and f.detail.endswith("…")
