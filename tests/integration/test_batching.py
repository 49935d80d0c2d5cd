"""Batching and debounce on the real broker (issue 11): which events each run got, read
from the runs' outputs (what the function saw), and when the runs began."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine.cli.devbroker import free_port
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.kafka
APP = "tests.integration.apps.batching:client"
FUNCTIONS = ("by-size", "by-time", "keyed", "by-bytes", "quiet", "collect")


@pytest.fixture
def stack(broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    # A small record limit, so a batch reaches what one task can carry with a few events.
    monkeypatch.setenv("STEPSTREAM_MAX_RECORD_BYTES", str(256 * 1024))
    monkeypatch.setenv("STEPSTREAM_MAX_EVENT_BYTES", str(128 * 1024))
    monkeypatch.setenv("STEPSTREAM_MAX_STEP_OUTPUT_BYTES", str(128 * 1024))
    s = Stack(broker, tmp_path)
    s.client = sdk.Client(app_id="sender", settings=s.settings)
    yield s
    s.close()


@pytest.fixture
def running(stack: Stack) -> Stack:
    stack.settings = replace(stack.settings, max_record_bytes=256 * 1024,
                             max_event_bytes=128 * 1024, max_step_output_bytes=128 * 1024)
    stack.start_engine()
    stack.spawn("worker", APP, log="w1")
    stack.wait_functions(*(f"batching-{f}" for f in FUNCTIONS))
    return stack


def send(stack: Stack, name: str, data: list[dict[str, Any]]) -> list[str]:
    return [str(i) for i in stack.client.send_sync([sdk.Event(name=name, data=d) for d in data])]


def runs_of(stack: Stack, event_ids: list[str]) -> list[dict[str, Any]]:
    """The distinct runs the events belong to, once every one has completed."""
    found: dict[str, dict[str, Any]] = {}
    for event_id in event_ids:
        runs = stack.runs_for(event_id)
        if not runs or runs[0]["status"] != "completed":
            return []
        found[runs[0]["run_id"]] = runs[0]
    return list(found.values())


def test_a_batch_closes_when_full_and_its_run_gets_every_event_in_order(running: Stack
                                                                        ) -> None:
    ids = send(running, "batch/by-size", [{"i": i} for i in range(10)])
    runs = wait_for(lambda: runs_of(running, ids), 60, "two full batches to run")
    outputs = sorted((r["output"] for r in runs), key=lambda o: ids.index(o["event"]))
    assert [o["events"] for o in outputs] == [ids[:5], ids[5:]]
    assert [o["event"] for o in outputs] == [ids[0], ids[5]]  # ctx.event is the first


def test_a_batch_closes_when_its_timeout_passes(running: Stack) -> None:
    ids = send(running, "batch/by-time", [{"i": i} for i in range(3)])
    [run] = wait_for(lambda: runs_of(running, ids), 60, "the batch to run")
    assert run["output"]["events"] == ids
    opened = next(e["at"] for e in run["timeline"] if e["type"] == "batch.opened")
    assert run["requested_at"] - opened >= 1000  # closed by its timeout, not before


def test_keys_batch_apart_and_if_exp_false_runs_alone(running: Stack) -> None:
    ids = send(running, "batch/keyed", [{"k": k} for k in ("a", "b", "a", "solo", "b", "a")])
    wait_for(lambda: runs_of(running, [ids[i] for i in (0, 2, 3, 5)]), 60, "a's batch")
    runs = {r["output"]["event"]: r["output"]["events"]
            for r in runs_of(running, [ids[i] for i in (0, 2, 3, 5)])}
    assert runs == {ids[0]: [ids[0], ids[2], ids[5]], ids[3]: [ids[3]]}
    assert running.runs_for(ids[1]) == []  # b's batch is still open (2 of 3)


def test_a_batch_closes_before_it_outgrows_what_one_run_can_carry(running: Stack) -> None:
    # 256 KiB records: a batch holds at most 224 KiB of events; 40 KiB each -> 5.
    blob = "x" * 40_000
    ids = send(running, "batch/by-bytes", [{"i": i, "blob": blob} for i in range(5)])
    ids += send(running, "batch/by-bytes", [{"i": 5, "blob": blob}])
    first = wait_for(lambda: runs_of(running, ids[:5]), 60, "the first batch")
    assert [r["output"]["events"] for r in first] == [ids[:5]]


def test_an_engine_killed_with_open_batches_puts_every_event_in_exactly_one_run(
        stack: Stack, tmp_path: Path) -> None:
    state, port = tmp_path / "engine-state", free_port()
    args = ("engine", "--port", str(port), "--state-dir", str(state), "--no-create-topics")
    engine = stack.spawn(*args, log="engine1")
    stack.spawn("worker", APP, log="worker")
    wait_for(lambda: any(f["id"] == "batching-crash" for f in _api(port, "/v1/functions")),
             60, "function registered")
    ids = send(stack, "batch/crash", [{"i": i} for i in range(40)])
    wait_for(lambda: _completed(port, ids[:7]), 60, "a first batch")
    ids += send(stack, "batch/crash", [{"i": i} for i in range(40, 60)])
    os.kill(engine.pid, signal.SIGKILL)  # batches open, events in flight
    engine.wait()
    ids += send(stack, "batch/crash", [{"i": i} for i in range(60, 75)])
    stack.spawn(*args, log="engine2")
    wait_for(lambda: _completed(port, ids), 120, "every event's batch to run")
    seen: Counter[str] = Counter()
    for run_id in {_api(port, f"/v1/events/{e}/runs")[0]["run_id"] for e in ids}:
        seen.update(_api_one(port, f"/v1/runs/{run_id}")["output"]["events"])
    assert set(seen) == set(ids) and set(seen.values()) == {1}  # none lost, none twice


def test_a_debounce_runs_once_with_the_last_event_after_the_quiet_period(running: Stack
                                                                         ) -> None:
    first = send(running, "debounce/quiet", [{"n": 1}])
    sent = time.time()
    time.sleep(1.0)  # the load's shape: a second event inside the period
    second = send(running, "debounce/quiet", [{"n": 2}])
    [run] = wait_for(lambda: runs_of(running, first + second), 30, "the debounced run")
    assert run["output"]["event"] == second[0]
    # Begun a quiet period after the second event, not after the first.
    assert run["requested_at"] / 1000 - sent >= 1.0 + 2.0 - 0.1


def test_a_debounce_timeout_caps_the_delay_and_a_new_one_begins(running: Stack) -> None:
    ids: list[str] = []
    for i in range(12):  # every 0.5 s for 6 s: the 2 s period never passes quietly
        ids += send(running, "debounce/quiet", [{"n": i}])
        time.sleep(0.5)
    runs = wait_for(lambda: runs_of(running, ids), 30, "both debounced runs")
    assert len(runs) == 2
    first = min(runs, key=lambda r: r["requested_at"])
    opened = next(e["at"] for e in first["timeline"] if e["type"] == "debounce.opened")
    # Begun at the 4 s timeout from the burst's first event, not later, although events
    # kept coming in its last second.
    assert 4000 <= first["requested_at"] - opened < 4500


def test_an_older_event_is_ignored_and_collect_gets_the_window(running: Stack) -> None:
    now = int(time.time() * 1000)
    ids = [str(i) for i in running.client.send_sync([
        sdk.Event(name="debounce/collect", data={"k": "x", "n": 1}, ts=now),
        sdk.Event(name="debounce/collect", data={"k": "x", "n": 2}, ts=now - 60_000),
        sdk.Event(name="debounce/collect", data={"k": "x", "n": 3}, ts=now + 1),
    ])]
    [run] = wait_for(lambda: runs_of(running, ids), 30, "the collected run")
    assert run["output"]["event"] == ids[2]
    assert run["output"]["events"] == [ids[0], ids[2]]  # the older one was ignored


def _api(port: int, path: str) -> list[dict[str, Any]]:
    try:
        return list(Stack.api_at(port, path)["data"])
    except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
        return []


def _api_one(port: int, path: str) -> dict[str, Any]:
    return dict(Stack.api_at(port, path)["data"])


def _completed(port: int, event_ids: list[str]) -> bool:
    for event_id in event_ids:
        runs = _api(port, f"/v1/events/{event_id}/runs")
        if not runs or runs[0]["status"] != "Completed":
            return False
    return True
