"""Throttle, rate limit, priority, singleton, two limits and env scope on the real broker
(issue 10): each test measures what the option promises from the app's ledger."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine.api.views import run_view, waiting_text
from engine.runtime.replay import replay
from tests.integration.flow_checks import executions, max_overlap, most_in_window
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.kafka
APP = "tests.integration.apps.flow:client"
FUNCTIONS = ("ping", "throttled", "rate-limited", "prioritized", "single-skip", "single-cancel",
             "two-limits", "env-a", "env-b")


@pytest.fixture
def stack(broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("STEPSTREAM_TEST_LEDGER", str(tmp_path / "ledger"))
    monkeypatch.setenv("STEPSTREAM_TEST_GATE", str(tmp_path))
    s = Stack(broker, tmp_path)
    s.client = sdk.Client(app_id="sender", settings=s.settings)
    s.start_engine()
    s.spawn("worker", APP, "--concurrency", "50", log="w1")
    s.wait_functions(*(f"flow-{f}" for f in FUNCTIONS))
    # A worker executes tasks only once its consumer has joined; a run that completes
    # says it has, so the timings measured below are the gates', not the join's.
    s.finished_run(s.send("flow/ping", {}), timeout=60)
    yield s
    s.close()


def ended(stack: Stack, event_ids: list[str]) -> list[dict[str, Any]] | None:
    """Each event's run once every one has ended; None until then."""
    runs = [stack.runs_for(e) for e in event_ids]
    if all(r and r[0]["status"] in ("completed", "failed", "cancelled", "skipped")
           for r in runs):
        return [r[0] for r in runs]
    return None


def run_of(stack: Stack, event_id: str) -> dict[str, Any] | None:
    runs = stack.runs_for(event_id)
    return runs[0] if runs else None


def test_a_throttle_spaces_starts_as_gcra_says_and_drops_nothing(
        stack: Stack, tmp_path: Path) -> None:
    ids = [stack.send("flow/throttled", {"i": i}) for i in range(20)]
    runs = wait_for(lambda: ended(stack, ids), 90, "all 20 runs to end")
    assert [r["status"] for r in runs] == ["completed"] * 20  # queued, never dropped
    starts = sorted(s for *_, s, _ in executions(tmp_path / "ledger", "throttled"))
    assert len(starts) == 20
    # limit 5 per 1 s, burst 1: 6 may start at once, then one every 200 ms. 20 starts
    # take at least (20 - 6) x 200 ms; no second holds more than 6 + 4 (+1 for clock
    # jitter between the engine, which decides, and the worker, which records).
    assert starts[-1] - starts[0] >= 14 * 200 - 100
    assert most_in_window(starts, 1000) <= 11
    queued = [r for r in runs
              if any(e["type"] == "throttle.queued" for e in r["timeline"])]
    assert len(queued) >= 13


def test_a_rate_limit_skips_the_runs_over_it_and_shows_them(
        stack: Stack, tmp_path: Path) -> None:
    ids = [stack.send("flow/rate-limited", {"i": i}) for i in range(10)]
    runs = wait_for(lambda: ended(stack, ids), 60, "all 10 events to have a run")
    statuses = [r["status"] for r in runs]
    assert statuses.count("completed") == 3 and statuses.count("skipped") == 7
    assert len(executions(tmp_path / "ledger", "rate-limited")) == 3
    skipped = next(r for r in runs if r["status"] == "skipped")
    assert skipped["error"]["name"] == "RateLimited"
    # The event's runs list holds the skip (the API shows it as status "Skipped").
    view = stack.engine.queries.runs_for_event(ids[-1])
    assert view and view[0]["status"] == "skipped"


def test_priority_moves_a_run_ahead_of_runs_queued_before_it(
        stack: Stack, tmp_path: Path) -> None:
    blocker = stack.send("flow/prioritized", {"block": True, "p": 0})
    wait_for(lambda: run_of(stack, blocker), 30, "the blocking run")
    ids = [stack.send("flow/prioritized", {"p": 0, "i": i}) for i in range(5)]
    urgent = stack.send("flow/prioritized", {"p": 600})

    def queued() -> bool:
        runs = [run_of(stack, e) for e in [*ids, urgent]]
        return all(r and (r.get("waiting") or {}).get("kind") == "slot" for r in runs)
    wait_for(queued, 30, "six runs queued behind the blocker")
    # Why each waits, as GET /v1/runs/{id} and `runs show` say it.
    last = stack.run(run_of(stack, ids[-1])["run_id"])
    assert waiting_text(run_view(last)["waiting"]) == "queued: concurrency limit 1, 5 ahead"
    first = stack.run(run_of(stack, urgent)["run_id"])
    assert first["waiting"]["ahead"] == 0
    (tmp_path / "prioritized").touch()
    wait_for(lambda: ended(stack, [blocker, *ids, urgent]), 60, "every run to end")
    order = [key for *_, key, _s, _e in sorted(
        executions(tmp_path / "ledger", "prioritized"), key=lambda x: x[3])]
    # The blocker (p 0) first, then the +600 run ahead of the five queued before it.
    assert order == ["0", "600", "0", "0", "0", "0", "0"]


def test_a_singleton_in_skip_mode_skips_while_one_is_active(
        stack: Stack, tmp_path: Path) -> None:
    first = stack.send("flow/single-skip", {})
    wait_for(lambda: run_of(stack, first), 30, "the first run")
    second = stack.send("flow/single-skip", {})
    [skipped] = wait_for(lambda: ended(stack, [second]), 30, "the second to be skipped")
    assert skipped["status"] == "skipped"
    assert skipped["error"]["name"] == "SingletonSkipped"
    (tmp_path / "single-skip").touch()
    wait_for(lambda: ended(stack, [first]), 30, "the first to complete")
    third = stack.send("flow/single-skip", {})  # none active now: it runs
    [done] = wait_for(lambda: ended(stack, [third]), 30, "the third to complete")
    assert done["status"] == "completed"


def test_a_singleton_in_cancel_mode_replaces_the_active_run_of_its_key(
        stack: Stack, tmp_path: Path) -> None:
    first = stack.send("flow/single-cancel", {"k": "a"})
    other = stack.send("flow/single-cancel", {"k": "b"})
    wait_for(lambda: run_of(stack, first) and run_of(stack, other), 30, "the first runs")
    second = stack.send("flow/single-cancel", {"k": "a"})
    [cancelled] = wait_for(lambda: ended(stack, [first]), 30, "the first to be cancelled")
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_by"] == {"kind": "singleton",
                                         "run_id": run_of(stack, second)["run_id"]}
    (tmp_path / "single-cancel").touch()
    runs = wait_for(lambda: ended(stack, [second, other]), 30, "the others to complete")
    assert [r["status"] for r in runs] == ["completed", "completed"]  # key b untouched


def test_two_limits_both_hold(stack: Stack, tmp_path: Path) -> None:
    ids = [stack.send("flow/two-limits", {"k": k, "i": i})
           for i in range(4) for k in ("a", "b", "c")]
    wait_for(lambda: ended(stack, ids), 90, "all 12 runs to end")
    rows = executions(tmp_path / "ledger", "two-limits")
    assert len(rows) == 12
    assert max_overlap([(s, e) for *_, s, e in rows]) == 2  # the function's limit
    by_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _, _, key, s, e in rows:
        by_key[key].append((s, e))
    assert all(max_overlap(spans) == 1 for spans in by_key.values())  # the key's


def test_an_env_scoped_key_is_shared_by_two_functions(stack: Stack, tmp_path: Path) -> None:
    ids = [stack.send(f"flow/env-{f}", {"i": i}) for i in range(4) for f in ("a", "b")]
    wait_for(lambda: ended(stack, ids), 60, "all 8 runs to end")
    rows = executions(tmp_path / "ledger", "shared")
    assert {key for _, _, key, _, _ in rows} == {"env-a", "env-b"}
    assert max_overlap([(s, e) for *_, s, e in rows]) == 1


def test_replay_rebuilds_the_gates_to_the_live_hash(stack: Stack, tmp_path: Path) -> None:
    ids = [stack.send("flow/throttled", {"i": i}) for i in range(10)]
    ids += [stack.send("flow/rate-limited", {"i": i}) for i in range(5)]
    ids += [stack.send("flow/two-limits", {"k": k}) for k in "aabbc"]
    runs = wait_for(lambda: ended(stack, ids), 90, "every run to end")
    assert {r["status"] for r in runs} == {"completed", "skipped"}
    assert stack.engine is not None
    live = stack.engine.queries.state_hash()
    # Throttle states (with their gate timers gone), rate-limit states, skipped runs.
    assert replay(stack.settings, tmp_path / "replayed") == live
