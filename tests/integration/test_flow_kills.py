"""Flow control across crashes (issue 10): a ``kill -9`` of a worker holding slots leaks
none, and a ``kill -9`` of the engine under a full backlog keeps the limit and runs
nothing twice. Measured from the app's ledger."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine.cli.devbroker import free_port
from tests.integration.flow_checks import executions, max_overlap
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.kafka
APP = "tests.integration.apps.flow:client"


@pytest.fixture
def stack(broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("STEPSTREAM_TEST_LEDGER", str(tmp_path / "ledger"))
    s = Stack(broker, tmp_path)
    s.client = sdk.Client(app_id="sender", settings=s.settings)
    yield s
    s.close()


def _runs(port: int, event_id: str) -> list[dict[str, Any]]:
    try:
        return list(Stack.api_at(port, f"/v1/events/{event_id}/runs")["data"])
    except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
        return []


def _completed(port: int, event_ids: list[str]) -> bool:
    for event_id in event_ids:
        runs = _runs(port, event_id)
        if not runs or runs[0]["status"] != "Completed":
            return False
    return True


def check_limit_and_once(ledger: Path, runs: int) -> None:
    """Every run executed both steps exactly once; at most 2 executed at any instant."""
    rows = executions(ledger, "slow-limited")
    once = Counter((run, step) for run, step, *_ in rows)
    assert len(once) == 2 * runs and set(once.values()) == {1}, once
    assert max_overlap([(s, e) for *_, s, e in rows]) <= 2


def test_a_worker_killed_while_holding_slots_leaks_none(stack: Stack, tmp_path: Path
                                                        ) -> None:
    stack.start_engine()
    first = stack.spawn("worker", APP, "--concurrency", "50", log="w1")
    stack.wait_functions("flow-slow-limited")
    ids = [stack.send("flow/slow-limited", {"i": i}) for i in range(10)]
    ledger = tmp_path / "ledger"
    wait_for(lambda: len(executions(ledger, "slow-limited")) >= 1, 60, "a first step")
    # Two runs hold the function's two slots, their steps executing on this worker.
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    stack.spawn("worker", APP, "--concurrency", "50", log="w2")

    def done() -> bool:
        return all((r := stack.runs_for(e)) and r[0]["status"] == "completed" for e in ids)
    wait_for(done, 120, "every queued run to complete on the new worker")
    rows = executions(ledger, "slow-limited")
    # The killed worker's steps in flight ran again on the new worker; the others once.
    assert {(run, step) for run, step, *_ in rows} == {
        (stack.runs_for(e)[0]["run_id"], s) for e in ids for s in ("a", "b")}
    assert max_overlap([(s, e) for *_, s, e in rows]) <= 2


def test_the_engine_killed_under_a_full_backlog_keeps_the_limit_and_runs_nothing_twice(
        stack: Stack, tmp_path: Path) -> None:
    state, port = tmp_path / "engine-state", free_port()
    args = ("engine", "--port", str(port), "--state-dir", str(state), "--no-create-topics")
    engine = stack.spawn(*args, log="engine1")
    stack.spawn("worker", APP, "--concurrency", "50", log="worker")
    wait_for(lambda: any(f["id"] == "flow-slow-limited"
                         for f in _functions(port)), 60, "function registered")
    ids = [stack.send("flow/slow-limited", {"i": i}) for i in range(20)]
    ledger = tmp_path / "ledger"
    wait_for(lambda: len(executions(ledger, "slow-limited")) >= 4, 60, "some steps done")
    os.kill(engine.pid, signal.SIGKILL)  # most runs are queued for a slot
    engine.wait()
    ids += [stack.send("flow/slow-limited", {"i": i}) for i in range(20, 25)]
    stack.spawn(*args, log="engine2")
    wait_for(lambda: _completed(port, ids), 180, "every run to complete after restart")
    check_limit_and_once(ledger, len(ids))


def _functions(port: int) -> list[dict[str, Any]]:
    try:
        return list(Stack.api_at(port, "/v1/functions")["data"])
    except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
        return []
