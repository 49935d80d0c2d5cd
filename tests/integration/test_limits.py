"""Run size limits on the real broker: large outputs travel by reference, and a run
over its state limit fails with a named error instead of hanging."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine.runtime.replay import replay
from sdk._refs import RefError, RefResolver
from tests.integration.harness import Stack
from topics import records
from topics.codec import encode
from topics.settings import MIB, Settings

pytestmark = pytest.mark.kafka

STEP_BYTES = 1_000_000


def blob(i: int) -> str:
    """A 1 MB output that differs per step, so a mixed-up reference shows."""
    return (f"{i}" * STEP_BYTES)[:STEP_BYTES]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="limits", settings=settings)

    @client.create_function(fn_id="nine-megabytes", retries=0,
                            trigger=sdk.TriggerEvent(event="test/nine"))
    async def nine(ctx: sdk.Context) -> dict[str, Any]:
        seen: list[str] = []
        for i in range(9):
            # Each step checks every earlier output as the task delivered it.
            def make(i: int = i, before: tuple[str, ...] = tuple(seen)) -> str:
                assert before == tuple(digest(blob(j)) for j in range(i)), "earlier output"
                return blob(i)
            out = await ctx.step.run(f"s{i}", make)
            seen.append(digest(out))
        return {"digests": seen}

    return client


@contextlib.contextmanager
def limits_stack(broker: str, tmp: Path, **limits: int) -> Iterator[Stack]:
    stack = Stack(broker, tmp, backoff_ms=100)
    stack.settings = replace(stack.settings, **limits)
    client = None
    try:
        stack.start_engine()
        client = make_client(stack.settings)
        stack.start_worker(client)
        stack.client = client
        stack.wait_functions("limits-nine-megabytes")
        yield stack
    finally:
        stack.close()
        if client is not None:
            client.close()


def test_nine_one_megabyte_steps_complete(broker: str, tmp_path: Path) -> None:
    # Defaults: 4 MiB per output, 32 MiB per run, 8 MiB per record. Before outputs went
    # by reference, the ninth task (9 MB of memoized outputs) exceeded the record limit
    # and the run stayed running for ever.
    with limits_stack(broker, tmp_path) as stack:
        run = stack.finished_run(stack.send("test/nine", {}), timeout=90)
        assert run["status"] == "completed", run.get("error")
        assert run["output"] == {"digests": [digest(blob(i)) for i in range(9)]}
        # References are built from record positions: replay builds the same state.
        assert stack.engine is not None
        assert replay(stack.settings, tmp_path / "replayed") == stack.engine.queries.state_hash()


def test_run_over_its_state_limit_fails_with_a_named_error(broker: str, tmp_path: Path
                                                          ) -> None:
    limit = int(2.5 * MIB)  # the third 1 MB output crosses it
    with limits_stack(broker, tmp_path, max_run_state_bytes=limit) as stack:
        run = stack.finished_run(stack.send("test/nine", {}), timeout=60)
        assert run["status"] == "failed"
        error = run["error"]
        assert error["name"] == "RunStateTooLarge"
        assert "'s2'" in error["message"] and f"{limit}-byte limit" in error["message"]
        assert f"is {STEP_BYTES + 5} bytes" in error["message"]  # msgpack str32 header


def test_a_task_over_the_workers_record_limit_fails_its_run(broker: str, tmp_path: Path
                                                            ) -> None:
    # A worker configured with a smaller record limit than the engine: it cannot take the
    # task after the sleep (two 500 kB outputs inline, plus the event), and fails the run
    # instead of dropping the task. (Without the sleep the worker would run all three
    # steps in one pass and never need that task.)
    stack = Stack(broker, tmp_path, backoff_ms=100)
    small = replace(stack.settings, max_record_bytes=MIB, max_step_output_bytes=512 * 1024)
    client = sdk.Client(app_id="limits", settings=small)

    @client.create_function(fn_id="halves", retries=0, trigger=sdk.TriggerEvent(event="t/h"))
    async def halves(ctx: sdk.Context) -> None:
        for i in range(3):
            await ctx.step.run(f"h{i}", lambda i=i: blob(i)[:500_000])
            if i == 1:
                await ctx.step.sleep("gap", "1ms")

    try:
        stack.start_engine()
        stack.start_worker(client)
        stack.client = client
        stack.wait_functions("limits-halves")
        run = stack.finished_run(stack.send("t/h", {"pad": "p" * 100_000}), timeout=60)
        assert run["status"] == "failed"
        assert run["error"]["name"] == "TaskTooLarge"
        assert f"over this worker's {MIB}-byte record limit" in run["error"]["message"]
        assert set(run["steps"]) == {"h0", "h1", "gap"}
    finally:
        stack.close()
        client.close()


def test_the_reference_reader_on_the_broker(broker: str, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path)
    report = records.OutcomesReported(run_id="R1", task_seq=1, worker="w", ts=1, outcomes=[
        records.Outcome(op=records.STEP_COMPLETED, step_id="a", output=blob(7)[:100_000])])
    stack.produce_raw(stack.catalog.runs, encode(report), key=b"R1", partition=2)
    resolver = RefResolver(stack.settings, timeout_s=3)

    def task(run_id: str, ref: list[int]) -> records.Task:
        event = {"name": "n", "data": {}, "id": "E", "ts": 1}
        return records.Task(run_id=run_id, fn_id="f", app_id="a", seq=2, partition_key=run_id,
                            event=event, events=[], attempt=0, steps={"a": {"ref": ref}},
                            step_attempts={}, ts=1)

    async def resolve(t: records.Task) -> Any:
        try:
            return (await resolver.resolve(t)).steps
        except RefError as exc:
            return exc.outcome

    try:
        assert asyncio.run(resolve(task("R1", [2, 0, 0]))) == {"a": {"data": blob(7)[:100_000]}}
        # Another run's record, and an offset nothing was written at (yet): the first
        # can never resolve, the second may once the broker answers.
        wrong = asyncio.run(resolve(task("R2", [2, 0, 0])))
        assert (wrong.error["name"], wrong.retriable) == ("StepOutputUnavailable", False)
        missing = asyncio.run(resolve(task("R1", [2, 5, 0])))
        assert (missing.error["name"], missing.retriable) == ("StepOutputUnavailable", True)
        assert "within 3 s" in missing.error["message"]
    finally:
        resolver.close()
