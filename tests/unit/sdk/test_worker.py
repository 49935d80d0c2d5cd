"""The worker's task handling with fake Kafka objects: no broker, no threads to wait on."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import sdk
from sdk._producer import DeliveryError
from sdk._worker import Worker
from topics import records
from topics.catalog import Catalog, event_partition, partition_for
from topics.codec import decode, encode
from topics.settings import Settings

# One step per pass: these tests are about task handling; run-ahead is test_pass.py's.
SETTINGS = Settings(brokers="unused:9092", prefix="t.", partitions=4, pass_max_steps=1)
CATALOG = Catalog(SETTINGS)


class FakeMessage:
    def __init__(self, value: bytes | None, partition: int, offset: int,
                 key: bytes | None = b"k") -> None:
        self._value, self._partition, self._offset, self._key = value, partition, offset, key

    def error(self) -> None:
        return None

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return CATALOG.tasks


class FakeProducer:
    def __init__(self, fail_topics: tuple[str, ...] = ()) -> None:
        self.sent: list[tuple[str, Any, int, records.Record]] = []
        self.fail_topics = fail_topics

    async def send(self, topic: str, key: Any, value: bytes, partition: int | None = None) -> None:
        if topic in self.fail_topics:
            raise DeliveryError(f"{topic}: broker said no")
        assert partition is not None
        self.sent.append((topic, key, partition, decode(value)))


def make_client() -> sdk.Client:
    client = sdk.Client(app_id="shop", settings=SETTINGS)

    @client.create_function(fn_id="order", trigger=sdk.TriggerEvent(event="shop/*"))
    async def order(ctx: sdk.Context) -> Any:
        await ctx.step.send_event("tell", sdk.Event(name="shop/told"))
        return await ctx.step.run("a", lambda: "A")

    return client


def make_worker(producer: FakeProducer) -> Worker:
    worker = Worker(make_client(), concurrency=2)
    worker._settings = SETTINGS
    worker._catalog = CATALOG
    worker._attach(producer, ThreadPoolExecutor(max_workers=2))  # type: ignore[arg-type]
    return worker


def task(run_id: str = "run-1", seq: int = 1, app_id: str = "shop", fn_id: str = "shop-order",
         steps: dict[str, Any] | None = None, report_start: bool = False) -> bytes:
    ev = {"name": "shop/x", "data": {}, "id": "e", "ts": 1}
    return encode(records.Task(run_id=run_id, fn_id=fn_id, app_id=app_id, seq=seq,
                               partition_key=f"pk-{run_id}", event=ev, events=[ev], attempt=0,
                               steps=steps or {}, step_attempts={}, ts=1,
                               report_start=report_start))


async def settle(worker: Worker) -> None:
    """Start what is queued and wait for every running and side task."""
    worker._loop = asyncio.get_running_loop()
    worker._start_queued()
    while worker._running or worker._side_tasks:
        await asyncio.gather(*worker._running, *worker._side_tasks)


def test_events_are_delivered_before_the_report_on_the_right_partitions() -> None:
    producer = FakeProducer()
    worker = make_worker(producer)

    async def main() -> None:
        worker._accept(FakeMessage(task(), 1, 10))
        await settle(worker)

    asyncio.run(main())
    (ev_topic, ev_key, ev_part, event), (topic, key, part, report) = producer.sent
    assert ev_topic == CATALOG.events and isinstance(event, records.Event)
    assert ev_key == event.id and ev_part == event_partition(event.name, 4)
    assert (topic, key, part) == (CATALOG.runs, "pk-run-1", partition_for("pk-run-1", 4))
    assert isinstance(report, records.OutcomesReported)
    assert (report.run_id, report.task_seq, report.worker) == ("run-1", 1, worker.worker_id)
    assert [(o.op, o.step_id, o.output) for o in report.outcomes] == [
        (records.STEP_COMPLETED, "tell", [event.id])]
    assert worker._tracker.position(1) == 11


def test_undelivered_events_fail_the_step_retriably() -> None:
    producer = FakeProducer(fail_topics=(CATALOG.events,))
    worker = make_worker(producer)

    async def main() -> None:
        worker._accept(FakeMessage(task(), 0, 0))
        await settle(worker)

    asyncio.run(main())
    [(_, _, _, report)] = producer.sent
    assert isinstance(report, records.OutcomesReported)
    [o] = report.outcomes
    assert (o.op, o.step_id, o.retriable) == (records.STEP_FAILED, "tell", True)
    assert o.error is not None and o.error["name"] == "SendError"


def test_skips_other_apps_stale_tasks_and_dead_letters_garbage() -> None:
    producer = FakeProducer()
    worker = make_worker(producer)

    async def main() -> None:
        worker._accept(FakeMessage(task(steps={"tell": {"data": ["x"]}}), 0, 0))
        await settle(worker)
        worker._accept(FakeMessage(task(seq=1), 0, 1))  # stale: seq 1 already ran
        worker._accept(FakeMessage(task(app_id="other", fn_id="other-f"), 0, 2))
        worker._accept(FakeMessage(b"\x01not msgpack", 0, 3, key=b"bad"))
        worker._accept(FakeMessage(task(run_id="r9", fn_id="shop-missing"), 0, 4))
        await settle(worker)

    asyncio.run(main())
    kinds = [(topic, type(rec).__name__) for topic, _, _, rec in producer.sent]
    assert kinds == [(CATALOG.runs, "OutcomesReported"), (CATALOG.dlq, "DeadLetter"),
                     (CATALOG.runs, "OutcomesReported")]
    _, dlq_key, dlq_part, letter = producer.sent[1]
    assert isinstance(letter, records.DeadLetter)
    assert (dlq_key, dlq_part, letter.offset, letter.value) == (
        b"bad", partition_for(b"bad", 4), 3, b"\x01not msgpack")
    missing = producer.sent[2][3]
    assert isinstance(missing, records.OutcomesReported)
    assert missing.outcomes[0].error is not None
    assert missing.outcomes[0].error["name"] == "FunctionNotFound"
    assert worker._tracker.position(0) == 5


def test_redelivered_copy_of_a_queued_task_finishes_with_it() -> None:
    producer = FakeProducer()
    worker = make_worker(producer)

    async def main() -> None:
        worker._accept(FakeMessage(task(), 2, 7))
        worker._accept(FakeMessage(task(), 2, 8))  # same run and seq: a re-delivery
        assert len(worker._jobs.backlog) == 1
        await settle(worker)

    asyncio.run(main())
    assert len(producer.sent) == 2  # one event, one report: the copy did not run again
    assert worker._tracker.position(2) == 9


def test_concurrency_bounds_running_tasks_and_revoke_drops_queued() -> None:
    producer = FakeProducer()
    worker = make_worker(producer)

    async def main() -> None:
        worker._loop = asyncio.get_running_loop()
        for i in range(5):
            worker._accept(FakeMessage(task(run_id=f"r{i}"), i % 2, i))
        worker._start_queued()
        assert len(worker._running) == 2 and len(worker._jobs.backlog) == 3
        worker._jobs.drop_queued({0})  # r2 and r4 were on partition 0, queued
        assert [j.task.run_id for j in worker._jobs.backlog] == ["r3"]
        await settle(worker)

    asyncio.run(main())
    reports = {rec.run_id for _, _, _, rec in producer.sent
               if isinstance(rec, records.OutcomesReported)}
    assert reports == {"r0", "r1", "r3"}


def test_newer_task_of_a_run_supersedes_a_queued_older_one() -> None:
    producer = FakeProducer()
    worker = make_worker(producer)

    async def main() -> None:
        # What a fresh worker reads after a crash: the finished task's offset was not
        # committed, and the engine's next task for the run follows it.
        worker._accept(FakeMessage(task(seq=1), 3, 0))
        worker._accept(FakeMessage(task(seq=2, steps={"tell": {"data": ["x"]}}), 3, 1))
        worker._accept(FakeMessage(task(seq=1), 3, 2))  # an older copy, later in the log
        assert [j.task.seq for j in worker._jobs.backlog] == [2]
        await settle(worker)

    asyncio.run(main())
    reports = [rec for _, _, _, rec in producer.sent if isinstance(rec, records.OutcomesReported)]
    assert [r.task_seq for r in reports] == [2]
    assert [o.step_id for o in reports[0].outcomes] == ["a"]
    assert worker._tracker.position(3) == 3


# -- run.started and on_failure functions ----------------------------------------------


def test_report_start_produces_run_started_first_on_the_runs_partition() -> None:
    producer = FakeProducer()
    worker = make_worker(producer)

    async def main() -> None:
        worker._accept(FakeMessage(task(report_start=True), 1, 10))
        await settle(worker)
        worker._accept(FakeMessage(task(run_id="run-2"), 1, 11))  # report_start unset
        await settle(worker)

    asyncio.run(main())
    kinds = [(type(rec).__name__, getattr(rec, "run_id", None)) for *_, rec in producer.sent]
    assert kinds == [("RunStarted", "run-1"), ("Event", None), ("OutcomesReported", "run-1"),
                     ("Event", None), ("OutcomesReported", "run-2")]
    topic, key, part, started = producer.sent[0]
    assert (topic, key, part) == (CATALOG.runs, "pk-run-1", partition_for("pk-run-1", 4))
    assert isinstance(started, records.RunStarted)
    assert (started.run_id, started.task_seq, started.worker) == ("run-1", 1, worker.worker_id)
    assert worker._tracker.position(1) == 12


class FlakyRunStarted(FakeProducer):
    """Refuses the first RunStarted."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    async def send(self, topic: str, key: Any, value: bytes, partition: int | None = None) -> None:
        if not self.refused and isinstance(decode(value), records.RunStarted):
            self.refused += 1
            raise DeliveryError(f"{topic}: broker said no")
        await super().send(topic, key, value, partition)


def test_undelivered_run_started_is_logged_retried_and_does_not_hold_the_run(
        caplog: pytest.LogCaptureFixture) -> None:
    producer = FlakyRunStarted()
    worker = make_worker(producer)

    async def main() -> None:
        worker._accept(FakeMessage(task(report_start=True), 0, 0))
        await settle(worker)

    with caplog.at_level("WARNING", logger="stepstream.worker"):
        asyncio.run(main())
    assert [type(rec).__name__ for *_, rec in producer.sent] == [
        "Event", "OutcomesReported", "RunStarted"]
    assert any("run.started for run run-1 task 1 not delivered, retrying" in r.getMessage()
               for r in caplog.records)


def test_on_failure_functions_are_registered_and_executed() -> None:
    client = sdk.Client(app_id="shop", settings=SETTINGS)

    async def alert(ctx: sdk.Context) -> Any:
        return f"alert: {ctx.event.data['run_id']}"

    @client.create_function(fn_id="order", trigger=sdk.TriggerEvent(event="shop/*"),
                            on_failure=alert)
    async def order(ctx: sdk.Context) -> Any:
        raise sdk.NonRetriableError("no")

    producer = FakeProducer()
    worker = Worker(client, concurrency=2)
    worker._settings, worker._catalog = SETTINGS, CATALOG
    worker._attach(producer, ThreadPoolExecutor(max_workers=2))  # type: ignore[arg-type]

    async def main() -> None:
        await worker._register()
        ev = {"name": records.FUNCTION_FAILED_EVENT, "data": {"run_id": "run-0"}, "id": "f",
              "ts": 1}
        worker._accept(FakeMessage(encode(records.Task(
            run_id="run-f", fn_id="shop-order-failure", app_id="shop", seq=1,
            partition_key="run-f", event=ev, events=[ev], attempt=0, steps={},
            step_attempts={}, ts=1)), 0, 0))
        await settle(worker)

    asyncio.run(main())
    registered = [rec for *_, rec in producer.sent if isinstance(rec, records.FunctionRegistered)]
    assert [(r.fn_id, r.name) for r in registered] == [
        ("shop-order", "order"), ("shop-order-failure", "order (on failure)")]
    [report] = [rec for *_, rec in producer.sent if isinstance(rec, records.OutcomesReported)]
    assert [(o.op, o.output) for o in report.outcomes] == [
        (records.FUNCTION_COMPLETED, "alert: run-0")]
