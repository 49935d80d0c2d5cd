"""Crashes: kill -9 of a worker mid-step and of the engine under load; two workers;
replay equals live state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine.cli.devbroker import free_port
from engine.runtime.replay import replay
from tests.integration.harness import ROOT, Stack, wait_for

pytestmark = pytest.mark.kafka
APP = "tests.integration.apps.durable:client"


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(broker, tmp_path)
    yield s
    s.close()


def journal_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def kill_worker_mid_slow_step(stack: Stack, tmp_path: Path, event: str, *fn_ids: str
                              ) -> tuple[dict[str, Any], Path, int]:
    """Send ``event``; SIGKILL the worker while the gated function's slow step runs
    (directly, or as an invoked child); let a new worker finish. Returns the run, the
    journal of step executions and the killed worker's pid."""
    journal, gate = tmp_path / "journal", tmp_path / "gate"
    os.environ["STEPSTREAM_TEST_JOURNAL"] = str(journal)
    os.environ["STEPSTREAM_TEST_GATE"] = str(gate)
    try:
        stack.start_engine()
        first = stack.spawn("worker", APP, log="worker1")
        stack.wait_functions(*fn_ids)
        client = sdk.Client(app_id="durable", settings=stack.settings)
        [event_id] = client.send_sync(sdk.Event(name=event, data={}))
        wait_for(lambda: any(w[0] == "slow-start" for w in journal_lines(journal)), 60,
                 "the slow step to start")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        gate.touch()
        stack.spawn("worker", APP, log="worker2")
        run = stack.finished_run(event_id, timeout=90)
        client.close()
    finally:
        os.environ.pop("STEPSTREAM_TEST_JOURNAL")
        os.environ.pop("STEPSTREAM_TEST_GATE")
    return run, journal, first.pid


def test_worker_killed_mid_step_completes_without_rerunning_completed_steps(
        stack: Stack, tmp_path: Path) -> None:
    run, journal, killed = kill_worker_mid_slow_step(stack, tmp_path, "durable/gated",
                                                     "durable-gated")
    assert run["status"] == "completed" and run["output"] == "one-two-three"
    seen = Counter(w[0] for w in journal_lines(journal))
    assert seen["first"] == 1, "a completed step ran again"
    assert seen["slow-start"] == 2 and seen["slow-end"] == 1  # the killed one re-ran
    assert seen["third"] == 1
    assert {w[2] for w in journal_lines(journal) if w[0] == "slow-start"} != {str(killed)}


def test_child_run_whose_worker_is_killed_still_answers_its_parent(
        stack: Stack, tmp_path: Path) -> None:
    run, journal, _ = kill_worker_mid_slow_step(stack, tmp_path, "durable/invoker",
                                                "durable-invoker", "durable-gated")
    assert run["status"] == "completed", run["error"]
    assert run["output"] == "one-two-three"
    seen = Counter(w[0] for w in journal_lines(journal))
    assert seen["first"] == 1 and seen["third"] == 1 and seen["slow-end"] == 1
    assert seen["slow-start"] == 2  # the child's killed step ran again on the new worker


def test_two_workers_both_execute_runs(stack: Stack) -> None:
    stack.start_engine()
    stack.spawn("worker", APP, "--concurrency", "4", log="w1")
    stack.spawn("worker", APP, "--concurrency", "4", log="w2")
    stack.wait_functions("durable-three-steps")
    client = sdk.Client(app_id="durable", settings=stack.settings)
    pids: set[int] = set()

    def both_seen() -> bool:
        # Until the second worker has joined the group the first may hold every task
        # partition, so keep offering work until both have executed some.
        ids = client.send_sync([sdk.Event(name="durable/load", data={"n": i}) for i in range(20)])
        for event_id in ids:
            run = stack.finished_run(event_id, timeout=60)
            assert run["status"] == "completed", run
            pids.add(run["output"]["pid"])
        return len(pids) == 2

    wait_for(both_seen, 120, "runs executed by both workers", every=0.5)
    client.close()


def _runs_via_api(port: int, event_id: str) -> list[dict[str, Any]]:
    try:
        return list(Stack.api_at(port, f"/v1/events/{event_id}/runs")["data"])
    except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
        return []


def test_engine_killed_under_load_restarts_and_applies_each_outcome_once(
        stack: Stack, tmp_path: Path) -> None:
    state, port = tmp_path / "engine-state", free_port()
    engine = stack.spawn("engine", "--port", str(port), "--state-dir", str(state),
                         "--no-create-topics", log="engine1")
    stack.spawn("worker", APP, log="worker")
    wait_for(lambda: _api_up(port), 60, "engine API")
    client = sdk.Client(app_id="durable", settings=stack.settings)
    wait_for(lambda: any(f["id"] == "durable-three-steps"
                         for f in Stack.api_at(port, "/v1/functions")["data"]), 60,
             "function registered")
    ids = client.send_sync([sdk.Event(name="durable/load", data={"n": i}) for i in range(150)])
    # Kill the engine while runs are in flight: some done, most not.
    wait_for(lambda: sum(1 for i in ids[:30] if _finished(port, i)) >= 5, 60,
             "some runs to finish")
    os.kill(engine.pid, signal.SIGKILL)
    engine.wait()
    ids += client.send_sync([sdk.Event(name="durable/load", data={"n": i}) for i in range(150, 200)])
    stack.spawn("engine", "--port", str(port), "--state-dir", str(state),
                "--no-create-topics", log="engine2")
    wait_for(lambda: _api_up(port), 60, "engine API after restart")
    wait_for(lambda: all(_finished(port, i) for i in ids), 120, "every run to finish")
    client.close()
    for i, event_id in enumerate(ids):
        [run] = _runs_via_api(port, event_id)
        assert run["status"] == "Completed", run
        assert run["output"]["n"] == i and run["output"]["b"] == (i + 1) * 2
        completed = [e for e in run["timeline"] if e["type"] == "step.completed"]
        assert sorted(e["step_id"] for e in completed) == ["a", "b", "c"], run["timeline"]
        assert all(len(s["attempts"]) == 1 for s in run["steps"]), run["steps"]


def test_engine_killed_while_runs_wait_resolves_and_cancels_them_after_restart(
        stack: Stack, tmp_path: Path) -> None:
    state, port = tmp_path / "engine-state", free_port()
    engine = stack.spawn("engine", "--port", str(port), "--state-dir", str(state),
                         "--no-create-topics", log="engine1")
    stack.spawn("worker", APP, log="worker")
    wait_for(lambda: _api_up(port), 60, "engine API")
    wait_for(lambda: any(f["id"] == "durable-awaiting"
                         for f in Stack.api_at(port, "/v1/functions")["data"]), 60,
             "function registered")
    client = sdk.Client(app_id="durable", settings=stack.settings)
    keys = [f"k{i}" for i in range(20)]
    ids = client.send_sync([sdk.Event(name="durable/awaiting", data={"key": k}) for k in keys])

    def waiting(event_id: str) -> bool:
        runs = _runs_via_api(port, event_id)
        return bool(runs) and (runs[0].get("waiting") or {}).get("kind") == "event"
    wait_for(lambda: all(waiting(i) for i in ids), 60, "every run to wait")
    os.kill(engine.pid, signal.SIGKILL)
    engine.wait()
    # Some answers arrive while the engine is down, the rest after it is back.
    client.send_sync([sdk.Event(name="durable/go", data={"key": k, "n": 1}) for k in keys[:5]])
    stack.spawn("engine", "--port", str(port), "--state-dir", str(state),
                "--no-create-topics", log="engine2")
    wait_for(lambda: _api_up(port), 60, "engine API after restart")
    client.send_sync([sdk.Event(name="durable/go", data={"key": k, "n": 2}) for k in keys[5:15]])
    client.send_sync([sdk.Event(name="durable/abort", data={"key": k}) for k in keys[15:]])

    def ended(event_id: str) -> bool:
        runs = _runs_via_api(port, event_id)
        return bool(runs) and runs[0]["status"] in ("Completed", "Cancelled", "Failed")
    wait_for(lambda: all(ended(i) for i in ids), 120, "every run to end")
    client.close()
    for n, (key, event_id) in enumerate(zip(keys, ids, strict=True)):
        [run] = _runs_via_api(port, event_id)
        if n < 15:
            assert run["status"] == "Completed", run
            assert run["output"] == {"key": key, "n": 1 if n < 5 else 2}
        else:
            assert run["status"] == "Cancelled", run
            assert run["cancelled_by"]["kind"] == "event"


def _api_up(port: int) -> bool:
    try:
        return Stack.api_at(port, "/health")["status"] == "ok"
    except (urllib.error.URLError, ConnectionError):
        return False


def _finished(port: int, event_id: str) -> bool:
    runs = _runs_via_api(port, event_id)
    return bool(runs) and runs[0]["status"] in ("Completed", "Failed")


def test_replay_hash_equals_live_hash(stack: Stack, tmp_path: Path) -> None:
    stack.start_engine()
    stack.spawn("worker", APP, log="worker")
    stack.wait_functions("durable-three-steps")
    client = sdk.Client(app_id="durable", settings=stack.settings)
    ids = client.send_sync([sdk.Event(name="durable/load", data={"n": i}) for i in range(40)])
    for event_id in ids:
        assert stack.finished_run(event_id)["status"] == "completed"
    client.close()
    assert stack.engine is not None
    live = stack.engine.queries.state_hash()
    assert replay(stack.settings, tmp_path / "replayed") == live
    # And through the command a user types.
    cli = subprocess.run([sys.executable, "-m", "engine", "replay", "--state-dir",
                          str(tmp_path / "replayed-cli")], env=stack.env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.split()[-1] == live


def test_workers_joining_and_dying_under_load_lose_no_run(stack: Stack) -> None:
    """Rebalances while tasks are queued and running: a worker joins mid-load and is
    killed with SIGKILL mid-load; every run still completes, each step applied once."""
    stack.start_engine()
    stack.spawn("worker", APP, "--concurrency", "8", log="steady")
    stack.wait_functions("durable-three-steps")
    client = sdk.Client(app_id="durable", settings=stack.settings)
    ids = client.send_sync([sdk.Event(name="durable/load", data={"n": i}) for i in range(100)])
    joiner = stack.spawn("worker", APP, "--concurrency", "8", log="joiner")

    def joiner_worked() -> bool:
        # Keep the load on until the joiner has taken partitions and executed runs.
        more = client.send_sync([sdk.Event(name="durable/load", data={"n": len(ids) + i})
                            for i in range(20)])
        ids.extend(more)
        return any(stack.finished_run(i, timeout=60)["output"]["pid"] == joiner.pid
                   for i in more)

    wait_for(joiner_worked, 90, "the joining worker to execute runs", every=0.1)
    # Kill it while runs are in flight: tasks it held queued or running move back.
    ids += client.send_sync([sdk.Event(name="durable/load", data={"n": len(ids) + i})
                        for i in range(100)])
    os.kill(joiner.pid, signal.SIGKILL)
    joiner.wait()
    ids += client.send_sync([sdk.Event(name="durable/load", data={"n": len(ids) + i})
                        for i in range(100)])
    runs = [stack.finished_run(i, timeout=120) for i in ids]
    client.close()
    for i, run in enumerate(runs):
        assert run["status"] == "completed" and run["output"]["n"] == i, run
        completed = [e["step_id"] for e in run["timeline"] if e["type"] == "step.completed"]
        assert sorted(completed) == ["a", "b", "c"]
