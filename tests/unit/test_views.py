"""The API's run view and its text rendering."""

from __future__ import annotations

import json

from rich.console import Console

from engine.fold import apply
from engine.views import (
    api_status,
    parse_rfc3339,
    rfc3339,
    run_view,
    runs_table,
    timeline_text,
)
from tests.unit.memtables import MemTables
from topics.records import (
    FUNCTION_COMPLETED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_SLEEP,
    Outcome,
    OutcomesReported,
    RunRequested,
    TimerFired,
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
                            "error": {"name": "IOError", "message": "timeout", "stack": ""}},
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
        "Running", "Running", "Completed", "Failed", "Cancelled"]


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
        "error": {"name": "IOError", "message": "timeout", "stack": ""}}
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
    assert v["status"] == "Failed" and v["error"] == err


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
