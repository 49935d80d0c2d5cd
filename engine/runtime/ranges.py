"""Reading a bounded range of one partition with a group-less consumer: the events
history reader (engine/api/topic_reader.py) and the snapshot reader
(engine/runtime/snapshot.py) both read backwards this way, a range at a time."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Message, TopicPartition

from topics.settings import Settings

# A bulk read's fetch wait. The dev broker answers a fetch only once its wait has passed
# and, from the start of a partition of millions of records, found nothing to send
# within the engine's 10 ms (a history load of 2M records read nothing for minutes); on
# Apache Kafka the wait only matters when there is no data.
BULK_FETCH_WAIT_MS = 500


def bulk_consumer(settings: Settings, client_id: str, *, from_start: bool = False
                  ) -> Consumer:
    """A group-less consumer for reading ranges of a partition (nothing is committed);
    ``from_start``: a whole partition from its start, with :data:`BULK_FETCH_WAIT_MS`
    (a few ranges near the end keep the engine's short wait: each fetch waits it out
    on the dev broker)."""
    wait = BULK_FETCH_WAIT_MS if from_start else settings.fetch_wait_max_ms
    return Consumer(settings.client_config({
        **settings.consumer_tuning(), "group.id": settings.prefix + "restore",
        "fetch.wait.max.ms": wait, "enable.partition.eof": True, "client.id": client_id}))


def fetch_range(consumer: Consumer, topic: str, p: int, start: int, end: int,
                deadline: float, chunk: int = 500) -> list[Message]:
    """The records of ``topic[p]`` in [start, end) (fewer if some were deleted, or if
    the partition's end, an error or ``deadline`` came first)."""
    consumer.assign([TopicPartition(topic, p, start)])
    out: list[Message] = []
    while time.monotonic() < deadline:
        for m in consumer.consume(chunk, 0.2):
            if m.error() is not None:
                if m.partition() == p and m.topic() == topic:
                    return out  # end of partition (eof) or an error: what we have
                continue
            if m.partition() != p:
                continue
            offset = m.offset() or 0
            if offset >= end:
                return out
            out.append(m)
            if offset >= end - 1:
                return out
    return out
