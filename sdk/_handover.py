"""Taking over task partitions: which uncommitted tasks are already finished, and how
far the ones still to run had got.

A worker commits a partition only up to its lowest unfinished task, so the tasks
finished above that point are read again by whoever owns the partition next. Kafka's
offset-commit metadata could carry the finished offsets, but the Tansu dev broker
drops it (``committed()`` returns no metadata, measured), so the successor finds them
from the topics instead, before running any of it:

* it reads the uncommitted tail of each partition it is given: a task followed by a
  later task of the same run is finished or obsolete (:func:`sdk._offsets.superseded`);
* for each task left, it reads the run's ``runs`` partition from the record that
  dispatched the task (``Task.runs_at``): the checkpoints a worker running ahead
  recorded for that task (``more`` reports) are steps it must not run again, and a
  final report means the task is finished.

This holds on any Kafka.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka

from sdk._offsets import superseded
from topics import records
from topics.codec import DecodeError, decode
from topics.settings import Settings

log = logging.getLogger("stepstream.worker")

# Past these, the rest of the tail is treated as not finished (it may run again, as
# at-least-once allows) rather than holding up the partition.
SCAN_MAX_RECORDS = 200_000
SCAN_MAX_S = 15.0
_BROKER_TIMEOUT_S = 10.0


@dataclass(slots=True)
class Handover:
    """What a new owner learns before running a partition's tail."""

    # Per partition: offsets of tasks that are finished (superseded or reported).
    done: dict[int, set[int]] = field(default_factory=dict)
    # (run id, task seq) -> steps its previous worker recorded in checkpoints.
    progress: dict[tuple[str, int], dict[str, dict[str, Any]]] = field(default_factory=dict)


def finished_ahead(settings: Settings, consumer: Any, topic: str, partitions: list[int],
                   runs_topic: str, *, max_records: int = SCAN_MAX_RECORDS,
                   max_s: float = SCAN_MAX_S) -> Handover:
    """For each of ``partitions``: offsets at or past the group's committed position
    whose task is finished, and the checkpointed steps of the tasks that are not.

    ``consumer`` is the group's consumer (for the committed positions); the topics are
    read with a separate, group-less consumer so the group's position is untouched.
    Any broker error yields what was found so far: skipping less is always safe (a
    step may then run again, as at-least-once allows).
    """
    found = Handover({p: set() for p in partitions})
    if not partitions:
        return found
    started = time.monotonic()
    scanner = _scanner(settings)
    try:
        committed = consumer.committed(
            [confluent_kafka.TopicPartition(topic, p) for p in partitions],
            timeout=_BROKER_TIMEOUT_S)
        # Read up to partition EOF, not to the high watermark: Tansu reports watermarks
        # lower than the real end. No committed offset: from the start, as the group.
        scanner.assign([confluent_kafka.TopicPartition(
            topic, tp.partition, tp.offset if tp.offset >= 0 else confluent_kafka.OFFSET_BEGINNING)
            for tp in committed])
        reading = {tp.partition for tp in committed}
        tails: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {
            p: [] for p in reading}
        count = 0
        while reading and count < max_records and time.monotonic() - started < max_s:
            batch: list[Any] = scanner.consume(1000, 0.1)
            for msg in batch:
                p = msg.partition()
                if p not in reading:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                        reading.discard(p)
                    continue
                tails[p].append((msg.offset(), msg.key(), msg.value()))
                count += 1
        if reading:
            log.warning("handover: read %d uncommitted task(s) in %.1fs and stopped; tasks "
                        "past that in partitions %s may run again", count,
                        time.monotonic() - started, sorted(reading))
        left: dict[tuple[str, int], tuple[int, int, records.Task]] = {}
        for p, tail in tails.items():
            found.done[p] = superseded((o, k) for o, k, _ in tail)
            for offset, _key, value in tail:
                if offset not in found.done[p]:
                    task = _task(value, settings)
                    if task is not None and task.runs_at is not None:
                        left[(task.run_id, task.seq)] = (p, offset, task)
        log.info("handover: %d of %d uncommitted task(s) in partitions %s already finished "
                 "(%.0f ms)", sum(len(s) for s in found.done.values()), count, sorted(tails),
                 (time.monotonic() - started) * 1000)
    except confluent_kafka.KafkaException as exc:
        log.warning("handover: could not read the uncommitted tasks (%s); they may run "
                    "again", exc)
        return found
    finally:
        scanner.close()
    if left:
        _read_checkpoints(settings, runs_topic, left, found, max_records,
                          max_s - (time.monotonic() - started))
    return found


def _read_checkpoints(settings: Settings, runs_topic: str,
                      left: dict[tuple[str, int], tuple[int, int, records.Task]],
                      found: Handover, max_records: int, max_s: float) -> None:
    """Read ``runs`` from where each left task was dispatched: its checkpoints go to
    ``found.progress``, and a task with a final report joins ``found.done``."""
    started = time.monotonic()
    start: dict[int, int] = {}
    keys: set[bytes] = set()
    for _p, _o, task in left.values():
        assert task.runs_at is not None
        runs_p, runs_o = task.runs_at[0], task.runs_at[1]
        start[runs_p] = min(start.get(runs_p, runs_o), runs_o)
        keys.add(task.partition_key.encode())
    scanner = _scanner(settings)
    steps: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    finished: set[tuple[str, int]] = set()
    try:
        scanner.assign([confluent_kafka.TopicPartition(runs_topic, p, o)
                        for p, o in start.items()])
        reading, count = set(start), 0
        while reading and count < max_records and time.monotonic() - started < max_s:
            for msg in scanner.consume(1000, 0.1):
                if msg.error() is not None:
                    if msg.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                        reading.discard(msg.partition())
                    continue
                count += 1
                if msg.key() not in keys:
                    continue
                rec = _report(msg.value(), settings)
                if rec is None or (rec.run_id, rec.task_seq) not in left:
                    continue
                if rec.more:
                    for o in rec.outcomes:
                        if o.op == records.STEP_COMPLETED and o.step_id:
                            steps[(rec.run_id, rec.task_seq)][o.step_id] = {"data": o.output}
                else:
                    p, offset, _task_rec = left[(rec.run_id, rec.task_seq)]
                    found.done.setdefault(p, set()).add(offset)
                    finished.add((rec.run_id, rec.task_seq))
        if reading:
            log.warning("handover: read %d runs record(s) in %.1fs and stopped; steps "
                        "checkpointed past that may run again", count,
                        time.monotonic() - started)
    except confluent_kafka.KafkaException as exc:
        log.warning("handover: could not read the runs' checkpoints (%s); their steps may "
                    "run again", exc)
    finally:
        scanner.close()
    found.progress.update((k, v) for k, v in steps.items() if k not in finished)
    if steps:
        log.info("handover: %d task(s) resume after %d checkpointed step(s)", len(steps),
                 sum(len(s) for s in steps.values()))


def _scanner(settings: Settings) -> Any:
    return confluent_kafka.Consumer(settings.client_config({
        # Never used to commit or join: librdkafka wants one for a consumer.
        "group.id": f"{settings.prefix}handover.{uuid.uuid4().hex}",
        **settings.consumer_tuning(),
        "enable.partition.eof": True,
    }))


def _task(value: bytes | None, settings: Settings) -> records.Task | None:
    try:
        rec = decode(value, max_bytes=settings.max_record_bytes, max_depth=settings.max_depth,
                     expect=(records.Task,))
    except DecodeError:
        return None  # the worker dead-letters it when it gets there
    if not isinstance(rec, records.Task):
        return None
    at = rec.runs_at
    if at is not None and not (isinstance(at, list) and len(at) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in at)):
        rec.runs_at = None  # malformed: read no checkpoints for it
    return rec


def _report(value: bytes | None, settings: Settings) -> records.OutcomesReported | None:
    try:
        rec = decode(value, max_bytes=settings.max_record_bytes, max_depth=settings.max_depth,
                     expect=(records.OutcomesReported,))
    except DecodeError:
        return None  # another kind of record of the same run
    return rec if isinstance(rec, records.OutcomesReported) else None
