"""Concurrency limits on the real broker (issue 10): what executed, read from the app's
ledger, never exceeds the limit; runs of one key execute in the order they were sent."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

import sdk
from tests.integration.flow_checks import executions as ledger_executions
from tests.integration.flow_checks import max_overlap
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.kafka
APP = "tests.integration.apps.flow:client"


@pytest.fixture
def stack(broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("STEPSTREAM_TEST_LEDGER", str(tmp_path / "ledger"))
    s = Stack(broker, tmp_path)
    s.client = sdk.Client(app_id="sender", settings=s.settings)
    s.start_engine()
    s.spawn("worker", APP, "--concurrency", "50", log="w1")
    s.wait_functions("flow-limited", "flow-per-key", "flow-sleepy", "flow-whole-run")
    yield s
    s.close()


def executions(tmp_path: Path, fn: str) -> list[tuple[str, str, str, int, int]]:
    return ledger_executions(tmp_path / "ledger", fn)


def completed(stack: Stack, event_ids: list[str]) -> bool:
    runs = [stack.runs_for(e) for e in event_ids]
    return all(r and r[0]["status"] == "completed" for r in runs)


def test_at_most_limit_steps_execute_at_once_and_all_runs_complete(
        stack: Stack, tmp_path: Path) -> None:
    ids = [stack.send("flow/limited", {"i": i}) for i in range(30)]
    wait_for(lambda: completed(stack, ids), 90, "all 30 runs to complete")
    spans = [(s, e) for _, _, _, s, e in executions(tmp_path, "limited")]
    assert len(spans) == 30
    assert max_overlap(spans) == 3  # the limit, reached and never exceeded


def test_a_key_runs_one_at_a_time_in_send_order_and_keys_run_in_parallel(
        stack: Stack, tmp_path: Path) -> None:
    # One burst: the events spread over the `events` partitions and reach the engine
    # interleaved; the runs of a key still execute in the order they were sent.
    keys = [k for _ in range(10) for k in ("a", "b", "c", "d", "e")]
    ids = [str(e) for e in stack.client.send_sync(
        [sdk.Event(name="flow/per-key", data={"k": k, "i": n}) for n, k in enumerate(keys)])]
    sent: dict[str, list[str]] = defaultdict(list)
    for k, event_id in zip(keys, ids, strict=True):
        sent[k].append(event_id)
    wait_for(lambda: completed(stack, ids), 120, "all 50 runs to complete")
    rows = executions(tmp_path, "per-key")
    assert len(rows) == 50
    run_of = {stack.runs_for(e)[0]["run_id"]: (k, n) for k, es in sent.items()
              for n, e in enumerate(es)}
    by_key: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for run, _, key, start, end in rows:
        k, n = run_of[run]
        assert k == key
        by_key[key].append((start, end, n))
    for key, spans in by_key.items():
        assert max_overlap([(s, e) for s, e, _ in spans]) == 1, key
        assert [n for _, _, n in sorted(spans)] == list(range(10)), key
    every = [(s, e) for spans in by_key.values() for s, e, _ in spans]
    assert max_overlap(every) > 1  # keys do not wait for each other


def test_a_sleeping_run_holds_no_slot_in_step_mode(stack: Stack, tmp_path: Path) -> None:
    ids = [stack.send("flow/sleepy", {"i": i}) for i in range(3)]
    wait_for(lambda: completed(stack, ids), 60, "the runs to complete")
    rows = executions(tmp_path, "sleepy")
    assert max_overlap([(s, e) for *_, s, e in rows]) == 1
    # Every run's first step ran before any run woke: the sleepers let the others in.
    befores = [s for _, step, _, s, _ in rows if step == "before"]
    afters = [s for _, step, _, s, _ in rows if step == "after"]
    assert max(befores) < min(afters)


def test_run_mode_holds_the_slot_across_a_sleep(stack: Stack, tmp_path: Path) -> None:
    ids = [stack.send("flow/whole-run", {"i": i}) for i in range(3)]
    wait_for(lambda: completed(stack, ids), 60, "the runs to complete")
    rows = executions(tmp_path, "whole-run")
    runs: dict[str, list[int]] = defaultdict(list)
    for run, _, _, start, end in rows:
        runs[run] += [start, end]
    spans = [(min(t), max(t)) for t in runs.values()]
    assert len(spans) == 3
    assert max_overlap(spans) == 1  # whole runs, sleeps included, one at a time
