"""The guard that keeps a ``runs`` or ``waits`` partition from being folded past a
missing offset (docs/architecture.md; README, Guarantees)."""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, Message, TopicPartition

log = logging.getLogger("stepstream.processor")

# How long a missing offset of runs/waits is awaited before the partition goes on past it.
GAP_WAIT_S = 10.0


class GapGuard:
    """Per partition, the first missing offset seen and since when."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.gaps: dict[tuple[str, int], tuple[int, float]] = {}

    def up_to_a_gap(self, topic: str, p: int, msgs: list[Message], expected: int
                     ) -> list[Message]:
        """The fetched records of a ``runs`` or ``waits`` partition up to the first one
        missing. Their offsets have no gaps (delete policy, no transactions), yet a
        broker may hand out a later batch before an earlier one is readable (the dev
        broker did: three run.requested records were skipped for good, their runs never
        began). Folding past a gap would store an offset beyond records never applied,
        so the partition is read again from the missing offset instead. A gap still
        there after GAP_WAIT_S, or below the log's start (retention), is accepted and
        logged: it must not stop the partition."""
        keep, nxt = [], expected
        for m in msgs:
            offset = m.offset() or 0
            if offset > nxt:
                break
            keep.append(m)
            nxt = max(nxt, offset + 1)
        else:
            self.gaps.pop((topic, p), None)
            return keep
        key = (topic, p)
        since = self.gaps.setdefault(key, (nxt, time.monotonic()))
        if since[0] != nxt:
            self.gaps[key] = since = (nxt, time.monotonic())
        low, _high = self.consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                         timeout=5, cached=False)
        if low > nxt or time.monotonic() - since[1] > GAP_WAIT_S:
            log.error("%s[%d]: records from offset %d are not readable (log starts at %d);"
                      " going on from offset %d", topic, p, nxt, low, msgs[-1].offset())
            self.gaps.pop(key, None)
            return msgs
        log.warning("%s[%d]: fetched from offset %d while %d is not read yet; reading "
                    "again from %d", topic, p, (msgs[len(keep)].offset()), nxt, nxt)
        self.consumer.seek(TopicPartition(topic, p, nxt))
        return keep
