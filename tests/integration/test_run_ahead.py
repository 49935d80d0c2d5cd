"""Run-ahead on the real broker: a worker goes on past completed steps in one pass,
recording each before the next starts (docs/architecture.md, "Run-ahead"). Workers are
child processes, so they can be killed; every step execution writes a ledger line."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine.api.ingest import EventIngest
from tests.integration.apps.ahead import MANY_STEPS
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.kafka
APP = "tests.integration.apps.ahead:client"


@pytest.fixture
def stack(broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("STEPSTREAM_TEST_LEDGER", str(tmp_path / "ledger"))
    monkeypatch.setenv("STEPSTREAM_TEST_GATE", str(tmp_path / "gate"))
    # A killed worker's partitions wait for its session to expire: keep that short.
    monkeypatch.setenv("STEPSTREAM_SESSION_TIMEOUT_MS", "4000")
    monkeypatch.setenv("STEPSTREAM_HEARTBEAT_INTERVAL_MS", "500")
    s = Stack(broker, tmp_path)
    s.client = sdk.Client(app_id="sender", settings=s.settings)
    s.start_engine()
    yield s
    s.close()


def ledger(tmp_path: Path, run_id: str) -> Counter[str]:
    """How many times each step of the run was executed."""
    path = tmp_path / "ledger"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(line.split()[1] for line in lines if line.split()[0] == run_id)


def started_at(tmp_path: Path, run_id: str) -> list[int]:
    path = tmp_path / "ledger"
    return [int(line.split()[3]) for line in path.read_text().splitlines()
            if line.split()[0] == run_id]


def dispatched(run: dict[str, Any]) -> int:
    return sum(1 for e in run["timeline"] if e["type"] == "task.dispatched")


def run_of(stack: Stack, event_id: str) -> dict[str, Any]:
    runs = wait_for(lambda: stack.runs_for(event_id), 30, "the run")
    return runs[0]


def cancel(stack: Stack, run: dict[str, Any]) -> None:
    """Cancel as the API does: a run.cancel stored on the run's partition."""
    ingest = EventIngest(stack.settings)
    ingest.start()
    try:
        asyncio.run(ingest.request_cancel(run["run_id"], run["partition_key"], "test"))
    finally:
        ingest.close()


def test_a_step_recorded_in_a_pass_never_runs_again_after_a_worker_kill(
        stack: Stack, tmp_path: Path) -> None:
    worker = stack.spawn("worker", APP, log="w1")
    stack.wait_functions("ahead-gated")
    event_id = stack.send("ahead/gated", {})
    run_id = run_of(stack, event_id)["run_id"]
    wait_for(lambda: ledger(tmp_path, run_id)["b"] == 1, 30, "step b to start")
    # b started in the same pass as a (one task), after a's checkpoint was acknowledged:
    # the engine applies it while b still holds (it waits for the gate).
    run = wait_for(lambda: (r := stack.run(run_id)) and "a" in r["steps"] and r, 30,
                   "the engine to apply a's checkpoint")
    assert run["steps"]["a"]["status"] == "completed"
    assert dispatched(run) == 1, run["timeline"]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    (tmp_path / "gate").touch()
    stack.spawn("worker", APP, log="w2")
    run = stack.finished_run(event_id, timeout=60)
    assert run["status"] == "completed" and run["output"] == [1, 2, 3], run
    # a was acknowledged before the kill: the successor read its checkpoint and did not
    # run it; b was executing at the kill, so it ran again, as at-least-once allows.
    assert ledger(tmp_path, run_id) == {"a": 1, "b": 2, "c": 1}


def test_a_cancel_stops_a_worker_running_ahead_at_its_next_step(
        stack: Stack, tmp_path: Path) -> None:
    stack.spawn("worker", APP, log="w1")
    stack.wait_functions("ahead-many")
    event_id = stack.send("ahead/many", {})
    requested = run_of(stack, event_id)
    run_id = requested["run_id"]
    wait_for(lambda: sum(ledger(tmp_path, run_id).values()) >= 5, 30, "five steps")
    cancelled_ms = time.time_ns() // 1_000_000
    cancel(stack, requested)
    run = stack.finished_run(event_id)
    assert run["status"] == "cancelled"

    def pass_ended() -> dict[str, Any] | None:
        r = stack.run(run_id)
        assert r is not None
        return next((e for e in r["timeline"] if e["type"] == "outcome.ignored"
                     and e["detail"]["last_report"]), None)

    ignored = wait_for(pass_ended, 30, "the worker's last report")
    after = [t for t in started_at(tmp_path, run_id) if t >= cancelled_ms]
    # Without task.cancelled the worker would go on to its budget (100 steps or 10 s,
    # 10 s here); it stops at the step after the cancel reaches it.
    assert len(after) <= 20, f"{len(after)} steps started after the cancel"
    assert sum(ledger(tmp_path, run_id).values()) < MANY_STEPS
    assert set(ignored["detail"]["steps"]) <= set(ledger(tmp_path, run_id))
    assert run["steps"].get(f"s{MANY_STEPS - 1}") is None


def test_a_retry_inside_a_pass_hands_back_and_the_next_pass_goes_on(
        stack: Stack, tmp_path: Path) -> None:
    stack.spawn("worker", APP, log="w1")
    stack.wait_functions("ahead-flaky")
    event_id = stack.send("ahead/flaky", {})
    run = stack.finished_run(event_id)
    assert run["status"] == "completed" and run["output"] == [1, 2, 3], run
    assert ledger(tmp_path, run["run_id"]) == {"a": 1, "b": 2, "c": 1}
    # Pass 1: a, then b fails (reported together); the retry is pass 2: b, c, the end.
    assert dispatched(run) == 2, run["timeline"]
    kinds = [e["type"] for e in run["timeline"] if e.get("step_id") == "b"]
    assert kinds[:2] == ["step.failed", "step.retry_scheduled"], kinds


def test_a_sleep_after_run_ahead_steps_ends_the_pass(stack: Stack, tmp_path: Path) -> None:
    stack.spawn("worker", APP, log="w1")
    stack.wait_functions("ahead-sleepy")
    event_id = stack.send("ahead/sleepy", {})
    run = stack.finished_run(event_id)
    assert run["status"] == "completed" and run["output"] == [1, 2, 3], run
    assert ledger(tmp_path, run["run_id"]) == {"a": 1, "b": 1, "c": 1}
    assert dispatched(run) == 2, run["timeline"]  # before the sleep, and after it
    nap = run["steps"]["nap"]
    woke = next(e["at"] for e in run["timeline"] if e["type"] == "task.dispatched"
                and e["detail"]["seq"] == 2)
    assert woke >= nap["until_ms"]
