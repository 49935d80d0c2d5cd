"""Run-ahead in the worker, with fake Kafka objects: a pass executes past completed
steps, records each before the next one starts, and hands back at what needs the
engine. No broker: the producer is a list, and every step notes how many records had
been produced when it started."""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import sdk
from sdk._producer import DeliveryError
from sdk._worker import Worker
from tests.unit.sdk.test_worker import CATALOG, FakeMessage, FakeProducer, settle
from topics import records
from topics.codec import encode
from topics.settings import Settings

SETTINGS = Settings(brokers="unused:9092", prefix="t.", partitions=4)


class Recorder(FakeProducer):
    """Also remembers which step started after how many produced records."""

    def __init__(self, fail_topics: tuple[str, ...] = ()) -> None:
        super().__init__(fail_topics)
        self.starts: list[tuple[str, int]] = []
        self.stop_after: int | None = None  # fail every send past this many records
        self.worker: Worker | None = None

    async def send(self, topic: str, key: Any, value: bytes, partition: int | None = None) -> None:
        if self.stop_after is not None and len(self.sent) >= self.stop_after:
            assert self.worker is not None
            self.worker.stop()
            raise DeliveryError("broker gone")
        await super().send(topic, key, value, partition)

    def step(self, name: str) -> None:
        self.starts.append((name, len(self.sent)))


def make(recorder: Recorder, settings: Settings = SETTINGS) -> Worker:
    client = sdk.Client(app_id="shop", settings=settings)

    def runner(name: str) -> Any:
        def handler() -> str:
            recorder.step(name)
            return name.upper()
        return handler

    @client.create_function(fn_id="three", trigger=sdk.TriggerEvent(event="shop/three"))
    async def three(ctx: sdk.Context) -> list[str]:
        return [await ctx.step.run(n, runner(n)) for n in ("a", "b", "c")]

    @client.create_function(fn_id="tell", trigger=sdk.TriggerEvent(event="shop/tell"))
    async def tell(ctx: sdk.Context) -> str:
        first = await ctx.step.run("a", runner("a"))
        await ctx.step.send_event("tell", sdk.Event(name="shop/told"))
        return first + await ctx.step.run("b", runner("b"))

    @client.create_function(fn_id="tell-last", trigger=sdk.TriggerEvent(event="shop/tell-last"))
    async def tell_last(ctx: sdk.Context) -> str:
        first = await ctx.step.run("a", runner("a"))
        await ctx.step.send_event("tell", sdk.Event(name="shop/told"))
        return first

    @client.create_function(fn_id="fails", trigger=sdk.TriggerEvent(event="shop/fails"))
    async def fails(ctx: sdk.Context) -> str:
        await ctx.step.run("a", runner("a"))

        def boom() -> str:
            recorder.step("b")
            raise RuntimeError("no")
        return await ctx.step.run("b", boom)

    @client.create_function(fn_id="wide", trigger=sdk.TriggerEvent(event="shop/wide"))
    async def wide(ctx: sdk.Context) -> tuple[Any, ...]:
        await ctx.step.run("a", runner("a"))
        both = await ctx.step.parallel([lambda: ctx.step.run("x", runner("x")),
                                        lambda: ctx.step.run("y", runner("y"))])
        await ctx.step.sleep("nap", "1h")
        return both

    worker = Worker(client, concurrency=2)
    worker._settings = settings
    worker._catalog = CATALOG
    worker._attach(recorder, ThreadPoolExecutor(max_workers=2))  # type: ignore[arg-type]
    recorder.worker = worker
    return worker


def task(fn: str, steps: dict[str, Any] | None = None) -> bytes:
    ev = {"name": f"shop/{fn}", "data": {}, "id": "e", "ts": 1}
    return encode(records.Task(run_id="run-1", fn_id=f"shop-{fn}", app_id="shop", seq=1,
                               partition_key="pk", event=ev, events=[ev], attempt=0,
                               steps=steps or {}, step_attempts={}, ts=1, runs_at=[0, 5]))


def run(worker: Worker, fn: str, steps: dict[str, Any] | None = None) -> None:
    async def main() -> None:
        worker._accept(FakeMessage(task(fn, steps), 1, 10))
        await settle(worker)
    asyncio.run(main())


def reports(recorder: Recorder) -> list[tuple[bool, list[tuple[str, Any]]]]:
    """(more, [(op, step id or output)]) per report produced."""
    return [(r.more, [(o.op, o.step_id or o.output) for o in r.outcomes])
            for _, _, _, r in recorder.sent if isinstance(r, records.OutcomesReported)]


def test_a_pass_records_each_step_before_the_next_starts_and_ends_with_the_function() -> None:
    recorder = Recorder()
    worker = make(recorder)
    run(worker, "three")
    assert reports(recorder) == [
        (True, [("step.completed", "a")]),
        (True, [("step.completed", "b")]),
        (False, [("step.completed", "c"), ("function.completed", ["A", "B", "C"])]),
    ]
    # b started once a's checkpoint was produced (1 record), c once b's was (2).
    assert recorder.starts == [("a", 0), ("b", 1), ("c", 2)]
    assert worker._tracker.position(1) == 11  # committed after the last report only


@pytest.mark.parametrize("fn", ["tell", "tell-last"])
def test_events_of_a_send_step_go_out_after_the_steps_before_it_are_recorded(fn: str) -> None:
    recorder = Recorder()
    run(make(recorder), fn)
    kinds = [type(r).__name__ + (":more" if getattr(r, "more", False) else "")
             for _, _, _, r in recorder.sent]
    # a's checkpoint, then the event, then tell's checkpoint (before b, or before the end
    # when the send is the last step), then the end.
    assert kinds == ["OutcomesReported:more", "Event", "OutcomesReported:more",
                     "OutcomesReported"]
    assert recorder.starts == ([("a", 0), ("b", 3)] if fn == "tell" else [("a", 0)])


def test_a_failing_step_ends_the_pass_with_the_steps_before_it() -> None:
    recorder = Recorder()
    run(make(recorder), "fails")
    [(_, outcomes)] = [(m, o) for m, o in reports(recorder) if not m]
    assert outcomes == [("step.failed", "b")]
    assert reports(recorder)[0] == (True, [("step.completed", "a")])


def test_parallel_steps_share_one_checkpoint_and_a_sleep_ends_the_pass() -> None:
    recorder = Recorder()
    run(make(recorder), "wide")
    assert reports(recorder) == [
        (True, [("step.completed", "a")]),
        (False, [("step.completed", "x"), ("step.completed", "y"), ("step.sleep", "nap")]),
    ]


def test_the_step_budget_bounds_a_pass() -> None:
    recorder = Recorder()
    run(make(recorder, dataclasses.replace(SETTINGS, pass_max_steps=2)), "three")
    assert reports(recorder) == [(True, [("step.completed", "a")]),
                                 (False, [("step.completed", "b")])]


def test_one_step_per_pass_is_the_round_trip_per_step_of_before() -> None:
    recorder = Recorder()
    run(make(recorder, dataclasses.replace(SETTINGS, pass_max_steps=1)), "three")
    assert reports(recorder) == [(False, [("step.completed", "a")])]


def test_a_revoked_or_cancelled_task_stops_at_its_next_step() -> None:
    recorder = Recorder()
    worker = make(recorder)

    async def main() -> None:
        worker._accept(FakeMessage(task("three"), 1, 10))
        worker._start_queued()
        [job] = [j for j in worker._jobs._held.values() if j.running]
        # The run was cancelled before its first step finished.
        worker._accept(FakeMessage(encode(records.TaskCancelled(
            run_id="run-1", app_id="shop", task_seq=1, ts=2)), 1, 11))
        assert job.revoked
        await settle(worker)

    asyncio.run(main())
    assert reports(recorder) == [(False, [("step.completed", "a")])]
    assert worker._tracker.position(1) == 12


def test_a_task_cancelled_before_it_starts_is_dropped_unrun() -> None:
    recorder = Recorder()
    worker = make(recorder)

    async def main() -> None:
        worker._accept(FakeMessage(task("three"), 1, 10))
        worker._accept(FakeMessage(encode(records.TaskCancelled(
            run_id="run-1", app_id="shop", task_seq=1, ts=2)), 1, 11))
        await settle(worker)

    asyncio.run(main())
    assert recorder.sent == [] and recorder.starts == []
    assert worker._tracker.position(1) == 12


def test_a_checkpoint_not_delivered_while_stopping_leaves_the_task_uncommitted() -> None:
    recorder = Recorder()
    recorder.stop_after = 1  # a's checkpoint goes out; b's does not
    worker = make(recorder)
    run(worker, "three")
    assert reports(recorder) == [(True, [("step.completed", "a")]),]
    assert [name for name, _ in recorder.starts] == ["a", "b"]  # c never started
    assert worker._tracker.position(1) in (None, 10)


class Handed:
    """What the consumer learnt taking the partition over: a's checkpoint."""

    def take_progress(self, run_id: str, seq: int) -> dict[str, Any] | None:
        return {"a": {"data": "A"}} if (run_id, seq) == ("run-1", 1) else None


def test_steps_a_previous_owner_checkpointed_are_not_run_again() -> None:
    recorder = Recorder()
    worker = make(recorder)
    worker._consumer = Handed()  # type: ignore[assignment]
    run(worker, "three")
    assert [name for name, _ in recorder.starts] == ["b", "c"]
    assert reports(recorder)[-1] == (
        False, [("step.completed", "c"), ("function.completed", ["A", "B", "C"])])
