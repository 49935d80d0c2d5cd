"""Resolving a task's references to large step outputs, and tasks too large to take.

A task carries small memoized values inline and large ones as a reference
``{"ref": [partition, offset, index]}`` to the ``runs`` record that holds them (the
worker's own ``outcomes.reported``, a ``wait.resolved`` or an ``invoke.finished``):
that log is kept for ever, so the value is still there. The worker reads those
records before it executes the task (see docs/architecture.md, "Large values").
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import confluent_kafka

from sdk import _outcomes
from sdk._durations import wall_ms
from topics import records
from topics.catalog import Catalog
from topics.codec import DecodeError, decode, encode
from topics.settings import MIB, Settings

# Records holding a memoized value, by the ref's last number (see engine/fold/core.py).
HOLDERS = (records.OutcomesReported, records.WaitResolved, records.InvokeFinished)
CACHE_BYTES = 64 * MIB
FETCH_TIMEOUT_S = 30.0


class RefError(Exception):
    """A referenced value could not be read; ``outcome`` is the run's failure."""

    def __init__(self, name: str, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.outcome = records.Outcome(op=records.FUNCTION_FAILED, retriable=retriable,
                                       error=_outcomes.error_named(name, message))


def has_refs(task: records.Task) -> bool:
    return any("ref" in memo for memo in task.steps.values())


class RefResolver:
    """Reads referenced ``runs`` records (assign + seek, no consumer group) and keeps
    the most recent ones in memory: each task of a run refers to the same outputs."""

    def __init__(self, settings: Settings, *, cache_bytes: int = CACHE_BYTES,
                 timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self._settings = settings
        self._topic = Catalog(settings).runs
        self._cache: OrderedDict[tuple[int, int], tuple[Any, int]] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._held = 0
        self._timeout_s = timeout_s
        self._consumer: Any = None
        self._closing = False
        # Every consumer call happens on this one thread.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepstream-refs")

    async def resolve(self, task: records.Task) -> records.Task:
        """``task`` with every reference replaced by its value; raises :class:`RefError`."""
        if not has_refs(task):
            return task
        loop = asyncio.get_running_loop()
        steps = await loop.run_in_executor(self._thread, self._resolve_steps, task)
        return replace(task, steps=steps)

    def close(self) -> None:
        """Stop reading; a fetch in progress gives up at its next poll."""
        self._closing = True

        def close_consumer() -> None:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
        self._thread.submit(close_consumer)
        self._thread.shutdown(wait=False)

    def _resolve_steps(self, task: records.Task) -> dict[str, dict[str, Any]]:
        steps = dict(task.steps)
        for step_id, memo in task.steps.items():
            ref = memo.get("ref")
            if ref is None:
                continue
            if not (isinstance(ref, list) and len(ref) == 3
                    and all(isinstance(n, int) and not isinstance(n, bool) for n in ref)):
                raise RefError("StepOutputUnavailable",
                               f"step {step_id!r}: malformed reference {ref!r}", retriable=False)
            partition, offset, index = ref
            steps[step_id] = _memo_of(self._record(partition, offset), index, task, step_id)
        return steps

    def _record(self, partition: int, offset: int) -> Any:
        key = (partition, offset)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[0]
        raw = self._fetch(partition, offset)
        try:
            rec = decode(raw, max_bytes=max(len(raw), self._settings.max_record_bytes),
                         max_depth=self._settings.max_depth, expect=HOLDERS)
        except DecodeError as exc:
            raise RefError("StepOutputUnavailable",
                           f"{self._topic}[{partition}]@{offset} is not a record holding a "
                           f"step output: {exc}", retriable=False) from None
        self._cache[key] = (rec, len(raw))
        self._held += len(raw)
        while self._held > self._cache_bytes and len(self._cache) > 1:
            _, (_, size) = self._cache.popitem(last=False)
            self._held -= size
        return rec

    def _fetch(self, partition: int, offset: int) -> bytes:
        if self._consumer is None:
            self._consumer = confluent_kafka.Consumer(self._settings.client_config({
                **self._settings.consumer_tuning(),
                # Never joins: partitions are assigned by hand and nothing is committed.
                "group.id": f"{self._settings.prefix}refs",
                "client.id": "stepstream-worker-refs",
            }))
        self._consumer.assign([confluent_kafka.TopicPartition(self._topic, partition, offset)])
        where = f"{self._topic}[{partition}]@{offset}"
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline and not self._closing:
            msg = self._consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().fatal():
                    break
                continue
            if msg.partition() != partition or (msg.offset() or 0) < offset:
                continue  # fetched for an earlier assignment
            if msg.offset() != offset:
                raise RefError("StepOutputUnavailable",
                               f"{where} is no longer on the broker (the topic's retention "
                               "removed it?)", retriable=False)
            value = msg.value()
            return value if isinstance(value, bytes) else b""
        raise RefError("StepOutputUnavailable",
                       f"could not read {where} within {self._timeout_s:.0f} s", retriable=True)


def _memo_of(rec: Any, index: int, task: records.Task, step_id: str) -> dict[str, Any]:
    """The memoized value ``index`` of a ``runs`` record, as a task would carry it."""
    if getattr(rec, "run_id", None) != task.run_id:
        raise RefError("StepOutputUnavailable",
                       f"step {step_id!r}: the referenced record belongs to run "
                       f"{getattr(rec, 'run_id', None)!r}", retriable=False)
    if isinstance(rec, records.OutcomesReported):
        if 0 <= index < len(rec.outcomes):
            o = rec.outcomes[index]
            if o.step_id == step_id and o.op == records.STEP_COMPLETED:
                return {"data": o.output}
            if o.step_id == step_id and o.op == records.STEP_FAILED:
                return {"error": o.error}
    elif isinstance(rec, records.WaitResolved):
        return {"data": rec.event}
    elif isinstance(rec, records.InvokeFinished):
        return {"data": rec.output} if rec.error is None else {"error": rec.error}
    raise RefError("StepOutputUnavailable",
                   f"step {step_id!r}: the referenced record holds no outcome of it",
                   retriable=False)


def oversized_task_report(value: Any, settings: Settings, app_id: str, worker: str
                          ) -> tuple[str, bytes] | None:
    """For a task record over this worker's record limit: ``(partition key, report)``
    failing its run with ``TaskTooLarge``, so the run ends instead of hanging. None if
    the record is not an oversized task of this app."""
    if not isinstance(value, bytes) or len(value) <= settings.max_record_bytes:
        return None
    try:
        task = decode(value, max_bytes=len(value), max_depth=settings.max_depth,
                      expect=(records.Task,))
    except DecodeError:
        return None
    if not isinstance(task, records.Task) or task.app_id != app_id:
        return None
    failed = records.Outcome(
        op=records.FUNCTION_FAILED, retriable=False,
        error=_outcomes.error_named(
            "TaskTooLarge",
            f"task {task.seq} of run {task.run_id} is {len(value)} bytes, over this worker's "
            f"{settings.max_record_bytes}-byte record limit (STEPSTREAM_MAX_RECORD_BYTES)"))
    report = records.OutcomesReported(run_id=task.run_id, task_seq=task.seq,
                                      outcomes=[failed], worker=worker, ts=wall_ms())
    return task.partition_key, encode(report)
