"""Taking over task partitions: which uncommitted tasks are already finished.

A worker commits a partition only up to its lowest unfinished task, so the tasks
finished above that point are read again by whoever owns the partition next. Kafka's
offset-commit metadata could carry the finished offsets, but the Tansu dev broker
drops it (``committed()`` returns no metadata, measured), so the successor finds them
from the topic itself instead: it reads the uncommitted tail of each partition it is
given before running any of it, and a task followed by a later task of the same run
is finished or obsolete (:func:`sdk._offsets.superseded`). This holds on any Kafka.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import confluent_kafka

from sdk._offsets import superseded
from topics.settings import Settings

log = logging.getLogger("stepstream.worker")

# Past these, the rest of the tail is treated as not finished (it may run again, as
# at-least-once allows) rather than holding up the partition.
SCAN_MAX_RECORDS = 200_000
SCAN_MAX_S = 15.0
_BROKER_TIMEOUT_S = 10.0


def finished_ahead(settings: Settings, consumer: Any, topic: str, partitions: list[int],
                   *, max_records: int = SCAN_MAX_RECORDS,
                   max_s: float = SCAN_MAX_S) -> dict[int, set[int]]:
    """For each of ``partitions``: offsets at or past the group's committed position
    whose task a later task of the same run supersedes.

    ``consumer`` is the group's consumer (for the committed positions); the tail is
    read with a separate, group-less consumer so the group's position is untouched.
    Any broker error yields what was found so far: skipping less is always safe.
    """
    found: dict[int, set[int]] = {p: set() for p in partitions}
    if not partitions:
        return found
    started = time.monotonic()
    scanner = confluent_kafka.Consumer({
        "bootstrap.servers": settings.brokers,
        # Never used to commit or join: librdkafka wants one for a consumer.
        "group.id": f"{settings.prefix}handover.{uuid.uuid4().hex}",
        **settings.consumer_tuning(),
        "enable.partition.eof": True,
    })
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
        tails: dict[int, list[tuple[int, bytes | None]]] = {p: [] for p in reading}
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
                tails[p].append((msg.offset(), msg.key()))
                count += 1
        if reading:
            log.warning("handover: read %d uncommitted task(s) in %.1fs and stopped; tasks "
                        "past that in partitions %s may run again", count,
                        time.monotonic() - started, sorted(reading))
        for p, tail in tails.items():
            found[p] = superseded(tail)
        log.info("handover: %d of %d uncommitted task(s) in partitions %s already finished "
                 "(%.0f ms)", sum(len(s) for s in found.values()), count, sorted(tails),
                 (time.monotonic() - started) * 1000)
    except confluent_kafka.KafkaException as exc:
        log.warning("handover: could not read the uncommitted tasks (%s); they may run "
                    "again", exc)
    finally:
        scanner.close()
    return found
