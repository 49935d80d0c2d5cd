"""The API's run view and its text rendering."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console

from engine.api.views import (
    RUN_STATUSES,
    STATUS,
    RunFilter,
    api_status,
    cancelled_text,
    parse_rfc3339,
    parse_status,
    parse_time_ms,
    rfc3339,
    run_status,
    run_view,
    runs_table,
    timeline_text,
    waiting_text,
)
from engine.fold import apply
from tests.unit.memtables import MemTables
from topics.codec import decode, encode
from topics.records import (
    FUNCTION_COMPLETED,
    FUNCTION_FAILED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_SLEEP,
    STEP_WAIT,
    CancelRequested,
    Outcome,
    OutcomesReported,
    RunRequested,
    RunStarted,
    TimerFired,
    WaitResolved,
)

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z
EVENT = {"name": "shop/order.created", "data": {"total": 5}, "id": "E1", "ts": T0}


def state(**over: object) -> dict[str, object]:
    s: dict[str, object] = {
        "run_id": "R1", "fn_id": "shop-charge", "app_id": "shop", "partition_key": "R1",
        "event": EVENT, "events": [EVENT], "status": "running",
        "requested_at": T0, "started_at": T0 + 5, "ended_at": None,
        "output": None, "error": None, "retries": 3, "attempt": 0, "task_seq": 2,
        "waiting": {"kind": "timer", "timer_id": "sleep:2", "due_ms": T0 + 60_000,
                    "reason": "sleep", "step_id": "nap"},
        "step_order": ["charge", "nap"],
        "steps": {
            "charge": {"name": "Charge card", "status": "completed", "output": {"ok": True},
                       "error": None, "until_ms": None,
                       "attempts": [
                           {"attempt": 0, "started_at": T0 + 10, "ended_at": T0 + 20,
                            "error": {"name": "IOError", "message": "timeout", "stack": "",
                      "code": "step_errored"}},
                           {"attempt": 1, "started_at": None, "ended_at": T0 + 1500,
                            "error": None}]},
            "nap": {"name": "nap", "status": "sleeping", "output": None, "error": None,
                    "until_ms": T0 + 60_000, "attempts": []},
        },
        "timeline": [
            {"at": T0, "type": "run.requested", "detail": {"event": "shop/order.created"}},
            {"at": T0 + 5, "type": "task.dispatched", "detail": {"seq": 1}},
            {"at": T0 + 20, "type": "step.failed", "step_id": "charge", "attempt": 0,
             "detail": {"error": "IOError: timeout"}},
            {"at": T0 + 20, "type": "step.retry_scheduled", "step_id": "charge",
             "attempt": 1, "detail": {"due_ms": T0 + 1000}},
            {"at": T0 + 1500, "type": "step.completed", "step_id": "charge", "attempt": 1},
            {"at": T0 + 1600, "type": "sleep.scheduled", "step_id": "nap",
             "detail": {"until_ms": T0 + 60_000}},
        ],
    }
    s.update(over)
    return s


def test_rfc3339_round_trip() -> None:
    assert rfc3339(T0) == "2024-05-01T12:00:00.000Z"
    assert rfc3339(T0 + 7) == "2024-05-01T12:00:00.007Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(None) is None
    assert parse_rfc3339(rfc3339(T0 + 123)) == T0 + 123
    assert parse_rfc3339("2024-05-01T12:00:00+00:00") == T0
    assert parse_rfc3339("nonsense") is None


def test_status_mapping() -> None:
    assert [api_status(s) for s in ("queued", "running", "completed", "failed",
                                    "cancelled")] == [
        "Queued", "Running", "Completed", "Failed", "Cancelled"]


def test_run_view_fields() -> None:
    v = run_view(state())
    assert v["run_id"] == "R1"
    assert v["function_id"] == "shop-charge"
    assert v["event_id"] == "E1"
    assert v["app_id"] == "shop"
    assert v["status"] == "Running"
    assert v["started_at"] == "2024-05-01T12:00:00.005Z"
    assert v["ended_at"] is None
    assert v["output"] is None and v["error"] is None and v["attempt"] == 0
    assert [s["id"] for s in v["steps"]] == ["charge", "nap"]
    charge, nap = v["steps"]
    assert charge["name"] == "Charge card" and charge["status"] == "completed"
    assert charge["output"] == {"ok": True} and charge["until"] is None
    assert charge["attempts"][0] == {
        "attempt": 0, "started_at": "2024-05-01T12:00:00.010Z",
        "ended_at": "2024-05-01T12:00:00.020Z",
        "error": {"name": "IOError", "message": "timeout", "stack": "", "code": "step_errored"}}
    assert charge["attempts"][1]["started_at"] is None
    assert nap["until"] == "2024-05-01T12:01:00.000Z"
    assert v["timeline"][0] == {"at": "2024-05-01T12:00:00.000Z", "type": "run.requested",
                                "detail": {"event": "shop/order.created"}}
    assert v["timeline"][2]["step_id"] == "charge" and v["timeline"][2]["attempt"] == 0
    assert "step_id" not in v["timeline"][1]
    json.dumps(v)  # plain JSON


def test_run_view_terminal() -> None:
    v = run_view(state(status="completed", ended_at=T0 + 2000, output=[1, 2]))
    assert v["status"] == "Completed" and v["output"] == [1, 2]
    assert v["ended_at"] == "2024-05-01T12:00:02.000Z"
    err = {"name": "ValueError", "message": "bad", "stack": "..."}
    v = run_view(state(status="failed", ended_at=T0 + 1, error=err))
    # A record written before error codes gets one from its kind.
    assert v["status"] == "Failed" and v["error"] == {**err, "code": "function_errored"}


def test_step_order_follows_state() -> None:
    v = run_view(state(step_order=["nap", "charge"]))
    assert [s["id"] for s in v["steps"]] == ["nap", "charge"]


def render(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_timeline_text_readable() -> None:
    out = render(timeline_text(run_view(state())))
    assert "run R1" in out and "Running" in out
    assert "12:00:00.000" in out and "+1.500s" in out
    assert "step.retry_scheduled" in out and "due=2024-05-01T12:00:01.000Z" in out
    assert "Charge card" in out and "until 2024-05-01T12:01:00.000Z" in out
    # the internal state renders the same
    assert render(timeline_text(state())) == out


def test_runs_table() -> None:
    out = render(runs_table([run_view(state(status="completed", ended_at=T0 + 65_005)),
                             state(run_id="R2")]))
    assert "R1" in out and "R2" in out and "Completed" in out and "1m05.000s" in out


def test_view_of_real_fold_state() -> None:
    """The lead's fold writes the state format this module reads."""
    t = MemTables()
    apply(t, RunRequested(run_id="R1", fn_id="f", app_id="a", partition_key="R1",
                          event=EVENT, events=[EVENT], retries=1, backoff_base_ms=1000,
                          ts=T0))
    apply(t, OutcomesReported(run_id="R1", task_seq=1, worker="w", ts=T0 + 10, outcomes=[
        Outcome(op=STEP_FAILED, step_id="a", name="A", retriable=True,
                error={"name": "E", "message": "m", "stack": ""})]))
    waiting = t.runs["R1"]["waiting"]
    apply(t, TimerFired(run_id="R1", timer_id=waiting["timer_id"], due_ms=waiting["due_ms"],
                        ts=waiting["due_ms"]))
    apply(t, OutcomesReported(run_id="R1", task_seq=2, worker="w", ts=T0 + 5000, outcomes=[
        Outcome(op=STEP_COMPLETED, step_id="a", output=3),
        Outcome(op=STEP_SLEEP, step_id="s", until_ms=T0 + 9000)]))
    waiting = t.runs["R1"]["waiting"]
    apply(t, TimerFired(run_id="R1", timer_id=waiting["timer_id"], due_ms=waiting["due_ms"],
                        ts=T0 + 9000))
    apply(t, OutcomesReported(run_id="R1", task_seq=3, worker="w", ts=T0 + 9100, outcomes=[
        Outcome(op=FUNCTION_COMPLETED, output={"done": True})]))
    v = run_view(t.runs["R1"])
    assert v["status"] == "Completed" and v["output"] == {"done": True}
    assert [s["id"] for s in v["steps"]] == ["a", "s"]
    assert [a["attempt"] for a in v["steps"][0]["attempts"]] == [0, 1]
    assert v["steps"][1]["until"] == rfc3339(T0 + 9000)
    types = [e["type"] for e in v["timeline"]]
    assert types[0] == "run.requested" and types[-1] == "run.completed"
    assert "timer.fired" in types and "sleep.scheduled" in types
    assert all(e["at"] and e["at"].endswith("Z") for e in v["timeline"])
    json.dumps(v)
    assert "run.completed" in render(timeline_text(v))


# --- cancellation, waits, invokes, parents, cron ---------------------------------


def test_parse_time_ms() -> None:
    assert parse_time_ms("1714564800000") == T0
    assert parse_time_ms(" 0 ") == 0
    assert parse_time_ms("2024-05-01T12:00:00Z") == T0
    assert parse_time_ms("2024-05-01T12:00:00.123Z") == T0 + 123
    assert parse_time_ms("2024-05-01T14:00:00+02:00") == T0
    assert parse_time_ms("2024-05-01T12:00") == T0  # no offset: UTC
    assert parse_time_ms("2024-05-01") == T0 - 12 * 3_600_000
    for bad in ("yesterday", "", "-1", "1.5", "2024-13-01", "1969-12-31T23:59:59Z",
                "9" * 25, "\uff11\uff12\uff13"):  # fullwidth digits
        with pytest.raises(ValueError):
            parse_time_ms(bad)


def test_parse_status() -> None:
    assert [parse_status(s) for s in ("queued", "Running", " FAILED ")] == [
        "queued", "running", "failed"]
    with pytest.raises(ValueError, match="one of queued, running, completed"):
        parse_status("done")
    assert set(RUN_STATUSES) == set(STATUS)


def test_old_state_has_no_new_fields() -> None:
    """A state written before cancellation, waits and invokes existed still renders."""
    v = run_view(state())
    assert v["cancelled_by"] is None and v["parent"] is None and v["cron"] is None
    assert v["children"] == []
    assert v["waiting"] == {"kind": "timer", "timer_id": "sleep:2",
                            "due": "2024-05-01T12:01:00.000Z", "reason": "sleep",
                            "step_id": "nap"}
    out = render(timeline_text(state()))
    assert "sleeping (step nap) until 2024-05-01T12:01:00.000Z" in out
    assert "cancelled" not in out and "parent" not in out
    bare = {"run_id": "R0", "fn_id": "f", "status": "running"}
    assert run_view(bare)["waiting"] is None
    assert "run R0" in render(timeline_text(bare))


def cancelled(by: dict[str, Any]) -> dict[str, object]:
    timeline = [*state()["timeline"],  # type: ignore[misc]
                {"at": T0 + 2000, "type": "run.cancelled", "detail": by}]
    return state(status="cancelled", ended_at=T0 + 2000, waiting=None, cancelled_by=by,
                 timeline=timeline)


def test_cancelled_by_api() -> None:
    by = {"kind": "api", "reason": "customer asked"}
    v = run_view(cancelled(by))
    assert v["status"] == "Cancelled" and v["cancelled_by"] == by and v["waiting"] is None
    out = render(timeline_text(v))
    assert "Cancelled" in out and "cancelled through the API: customer asked" in out
    assert "run.cancelled" in out and "kind=api, reason=customer asked" in out
    assert "cancelled through the API\n" in render(timeline_text(
        cancelled({"kind": "api", "reason": None})))


def test_cancelled_by_event_and_timeout() -> None:
    out = render(timeline_text(cancelled({"kind": "event", "event_id": "E9",
                                          "event": "shop/order.cancelled"})))
    assert "cancelled by event shop/order.cancelled (E9)" in out
    out = render(timeline_text(cancelled({"kind": "timeout", "which": "start"})))
    assert "cancelled by timeout: did not start in time" in out
    out = render(timeline_text(cancelled({"kind": "timeout", "which": "finish"})))
    assert "cancelled by timeout: did not finish in time" in out
    out = render(timeline_text(cancelled({"kind": "timeout", "which": "finish",
                                          "limit_ms": 30_000})))
    assert "cancelled by timeout: did not finish in time (limit 30.000s)" in out
    # a kind this version does not know, or no cancelled_by at all
    assert "cancelled (kind=operator)" in render(timeline_text(cancelled({"kind": "operator"})))
    assert "\ncancelled" in render(timeline_text(state(status="cancelled", waiting=None)))


def test_waiting_for_event() -> None:
    waiting = {"kind": "event", "step_id": "await-payment", "wait_id": "W1",
               "event": "shop/payment.received", "timer_id": "wait:3",
               "due_ms": T0 + 3_600_000}
    steps: dict[str, Any] = {
        "await-payment": {"name": "await-payment", "status": "waiting", "output": None,
                          "error": None, "until_ms": T0 + 3_600_000, "attempts": []}}
    s = state(waiting=waiting, steps=steps, step_order=["await-payment"], timeline=[
        {"at": T0, "type": "run.requested"},
        {"at": T0 + 10, "type": "wait.registered", "step_id": "await-payment",
         "detail": {"event": "shop/payment.received", "wait_id": "W1",
                    "due_ms": T0 + 3_600_000}}])
    v = run_view(s)
    assert v["waiting"]["kind"] == "event" and v["waiting"]["due"] == "2024-05-01T13:00:00.000Z"
    assert "due_ms" not in v["waiting"] and v["steps"][0]["status"] == "waiting"
    json.dumps(v)
    out = render(timeline_text(v))
    assert ("waiting for event shop/payment.received (step await-payment) until "
            "2024-05-01T13:00:00.000Z") in out
    assert "wait.registered" in out
    # the step row says what it waits for
    row = next(line for line in out.splitlines() if line.strip().startswith("await-payment"))
    assert "waiting for event shop/payment.received until" in row


def test_invoke_parent_and_children() -> None:
    waiting = {"kind": "invoke", "step_id": "charge", "child_run_id": "CHILD1",
               "function_id": "billing-charge", "timer_id": "invoke:2",
               "due_ms": T0 + 60_000}
    steps = {"charge": {"name": "charge", "status": "invoking", "output": None,
                        "error": None, "until_ms": None, "attempts": []},
             "audit": {"name": "audit", "status": "completed", "output": {"ok": 1},
                       "error": None, "until_ms": None, "attempts": []}}
    s = state(waiting=waiting, steps=steps, step_order=["audit", "charge"], timeline=[
        {"at": T0, "type": "run.requested"},
        {"at": T0 + 5, "type": "invoke.requested", "step_id": "audit",
         "detail": {"child_run_id": "CHILD0", "function_id": "audit-log"}},
        {"at": T0 + 9, "type": "invoke.finished", "step_id": "audit",
         "detail": {"child_run_id": "CHILD0"}},
        {"at": T0 + 12, "type": "invoke.requested", "step_id": "charge",
         "detail": {"child_run_id": "CHILD1"}}],
        parent={"run_id": "PARENT", "partition_key": "PARENT", "step_id": "sub"},
        cron={"cron": "*/5 * * * *", "tick_ms": T0})
    v = run_view(s)
    assert v["parent"] == {"run_id": "PARENT", "partition_key": "PARENT", "step_id": "sub"}
    assert v["children"] == [
        {"run_id": "CHILD0", "step_id": "audit", "function_id": "audit-log"},
        {"run_id": "CHILD1", "step_id": "charge", "function_id": "billing-charge"}]
    assert v["cron"] == {"cron": "*/5 * * * *", "tick": "2024-05-01T12:00:00.000Z"}
    assert v["waiting"]["child_run_id"] == "CHILD1"
    json.dumps(v)
    out = render(timeline_text(v))
    assert ("waiting for child run CHILD1 (function billing-charge, step charge) until "
            "2024-05-01T12:01:00.000Z") in out
    assert "parent run PARENT (step sub)" in out
    assert "child run CHILD0 (function audit-log, step audit)" in out
    assert "child run CHILD1 (function billing-charge, step charge)" in out
    assert "cron */5 * * * *, tick 2024-05-01T12:00:00.000Z" in out
    assert "invoke.requested" in out and "child_run_id=CHILD1" in out
    assert render(timeline_text(s)) == out  # internal state renders the same


def test_waiting_text_kinds() -> None:
    assert waiting_text({"kind": "task", "seq": 3}) == "waiting for a worker (task 3)"
    assert waiting_text({"kind": "timer", "reason": "retry", "step_id": "a",
                         "due_ms": T0}) == (
        "waiting for a timer (retry, step a) until 2024-05-01T12:00:00.000Z")
    assert waiting_text({"kind": "invoke"}) == "waiting for a child run"
    assert waiting_text(None) == "" and waiting_text({}) == ""
    assert waiting_text({"kind": "later"}) == "waiting: kind=later"
    assert cancelled_text(None) == "cancelled"
    assert waiting_text({"kind": "slot", "limit": 5, "key": "acct-7", "ahead": 12}) == (
        "queued: concurrency limit 5 of key acct-7, 12 ahead")
    assert waiting_text({"kind": "slot", "limit": 3, "key": None}) == (
        "queued: concurrency limit 3")
    assert waiting_text({"kind": "throttle", "limit": 10, "period": "1m", "key": "a",
                         "ahead": 3, "due_ms": T0}) == (
        "throttled: 10 per 1m of key a, 3 ahead; next start at 2024-05-01T12:00:00.000Z")


def test_a_skipped_run_reads_skipped() -> None:
    s = state(status="skipped", ended_at=T0,
              error={"name": "RateLimited", "message": "rate limit of 3 per 10s reached",
                     "stack": ""})
    view = run_view(s)
    assert view["status"] == "Skipped" and view["waiting"] is None
    assert run_status(s) == "skipped"
    assert parse_status("skipped") == "skipped"


def test_terminal_run_shows_no_wait() -> None:
    s = state(status="completed", ended_at=T0 + 1)  # waiting left set: not shown
    assert run_view(s)["waiting"] is None
    assert "sleeping (step nap)" not in render(timeline_text(s))


def test_view_of_real_fold_cancel() -> None:
    """A run cancelled through the API, as the fold records it, reads back in the view."""
    t = MemTables()
    apply(t, RunRequested(run_id="R1", fn_id="f", app_id="a", partition_key="R1",
                          event=EVENT, events=[EVENT], retries=1, backoff_base_ms=1000,
                          ts=T0))
    # the record exactly as EventIngest.request_cancel puts it on the wire
    record = decode(encode(CancelRequested(run_id="R1", by={"kind": "api", "reason": "dup"},
                                           ts=T0 + 50)))
    apply(t, record)
    v = run_view(t.runs["R1"])
    assert v["status"] == "Cancelled" and v["waiting"] is None
    assert v["cancelled_by"] == {"kind": "api", "reason": "dup"}
    assert "run.cancelled" in [e["type"] for e in v["timeline"]]
    json.dumps(v)
    out = render(timeline_text(v))
    assert "cancelled through the API: dup" in out and "run.cancelled" in out


# --- Queued, attempt numbers, resolved waits, cancelled steps, list times ------------


def _requested(t: MemTables, run_id: str = "R1", retries: int = 2) -> None:
    apply(t, RunRequested(run_id=run_id, fn_id="f", app_id="a", partition_key=run_id,
                          event=EVENT, events=[EVENT], retries=retries, backoff_base_ms=1000,
                          ts=T0))


def _row(out: str, *words: str) -> list[str]:
    """The cells of the one rendered table row holding every word."""
    [line] = [ln for ln in out.splitlines() if "│" in ln and all(w in ln.split() for w in words)]
    return [cell.strip() for cell in line.split("│")]


def test_run_no_worker_has_begun_is_queued() -> None:
    t = MemTables()
    _requested(t)
    s = t.runs["R1"]
    v = run_view(s)
    assert v["status"] == "Queued" and v["started_at"] is None
    assert RunFilter(statuses=frozenset({"queued"})).matches(s)
    assert not RunFilter(statuses=frozenset({"running"})).matches(s)
    assert "Queued" in render(runs_table([v])) and "Queued" in render(timeline_text(v))
    # The first report is a worker beginning it.
    apply(t, OutcomesReported(run_id="R1", task_seq=1, worker="w", ts=T0 + 10,
                              outcomes=[Outcome(op=STEP_COMPLETED, step_id="a", output=1)]))
    s = t.runs["R1"]
    assert run_view(s)["status"] == "Running" and run_view(s)["started_at"] is not None
    assert RunFilter(statuses=frozenset({"running"})).matches(s)
    assert not RunFilter(statuses=frozenset({"queued"})).matches(s)


def test_run_started_or_function_retry_is_no_longer_queued() -> None:
    t = MemTables()
    _requested(t)
    apply(t, RunStarted(run_id="R1", task_seq=1, worker="w", ts=T0 + 5))
    assert run_view(t.runs["R1"])["status"] == "Running"
    t = MemTables()
    _requested(t, retries=2)
    apply(t, OutcomesReported(run_id="R1", task_seq=1, worker="w", ts=T0 + 10, outcomes=[
        Outcome(op=FUNCTION_FAILED, retriable=True,
                error={"name": "E", "message": "m", "stack": ""})]))
    assert run_view(t.runs["R1"])["status"] == "Running"


def test_runs_show_numbers_attempts_from_one_everywhere() -> None:
    out = render(timeline_text(run_view(state())))
    # The step failed on its first attempt and completed on its second, which is also
    # how many attempts the steps table counts.
    assert _row(out, "step.failed")[4] == "1"
    assert _row(out, "step.retry_scheduled")[4] == "2"
    assert _row(out, "step.completed")[4] == "2"
    assert _row(out, "Charge", "completed")[2] == "2"


def _waiting_run(t: MemTables) -> None:
    _requested(t)
    apply(t, OutcomesReported(run_id="R1", task_seq=1, worker="w", ts=T0 + 10, outcomes=[
        Outcome(op=STEP_WAIT, step_id="paid", until_ms=T0 + 3_600_000,
                wait={"event": "shop/payment.received", "match": None, "if_exp": None})]))


def test_runs_show_says_what_resolved_a_wait() -> None:
    t = MemTables()
    _waiting_run(t)
    paid = {"name": "shop/payment.received", "data": {}, "id": "E2", "ts": T0 + 500}
    apply(t, WaitResolved(run_id="R1", wait_id="R1/paid", kind="step", event=paid,
                          ts=T0 + 600))
    out = render(timeline_text(run_view(t.runs["R1"])))
    row = _row(out, "paid", "completed")
    assert row[3].startswith("event shop/payment.received (E2)")
    assert "13:00:00" not in row[3]  # the timeout it did not reach


def test_runs_show_says_a_wait_timed_out() -> None:
    t = MemTables()
    _waiting_run(t)
    apply(t, TimerFired(run_id="R1", timer_id=t.runs["R1"]["waiting"]["timer_id"],
                        due_ms=T0 + 3_600_000, ts=T0 + 3_600_020))
    out = render(timeline_text(run_view(t.runs["R1"])))
    assert _row(out, "paid", "completed")[3] == "timed out at 2024-05-01T13:00:00.020Z"


def test_cancelled_run_shows_its_pending_step_cancelled() -> None:
    t = MemTables()
    _requested(t)
    apply(t, OutcomesReported(run_id="R1", task_seq=1, worker="w", ts=T0 + 10, outcomes=[
        Outcome(op=STEP_COMPLETED, step_id="a", output=1),
        Outcome(op=STEP_SLEEP, step_id="nap", until_ms=T0 + 60_000)]))
    apply(t, CancelRequested(run_id="R1", by={"kind": "api", "reason": None}, ts=T0 + 50))
    v = run_view(t.runs["R1"])
    assert [(s["id"], s["status"]) for s in v["steps"]] == [("a", "completed"),
                                                            ("nap", "cancelled")]
    assert _row(render(timeline_text(v)), "nap", "cancelled")[1:] == ["cancelled", "0", ""]


def test_runs_list_times_carry_their_timezone() -> None:
    out = render(runs_table([run_view(state())]))
    assert "2024-05-01T12:00:00.000Z" in out
