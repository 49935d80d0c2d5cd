"""Reading a bounded range of one partition with a group-less consumer: the events
history reader (engine/api/topic_reader.py) and the snapshot reader
(engine/runtime/snapshot.py) both read backwards this way, a range at a time."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Message, TopicPartition


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
