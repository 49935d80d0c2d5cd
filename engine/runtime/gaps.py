"""The guard that keeps a ``runs`` or ``waits`` partition from being folded, and an
``events`` partition from being routed, past a missing offset (docs/architecture.md;
README, Guarantees)."""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

log = logging.getLogger("stepstream.processor")

# How long a missing offset of runs/waits is awaited before the partition goes on past it.
GAP_WAIT_S = 10.0


class GapGuard:
    """Per partition, the first missing offset seen and since when."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.gaps: dict[tuple[str, int], tuple[int, float]] = {}
        # Per ``events`` partition: the offset after the last record routed (there is no
        # store to hold it; routing keeps no state).
        self.routed_to: dict[tuple[str, int], int] = {}

    def assigned(self, topic: str, p: int, committed: int | None) -> None:
        """An ``events`` partition assigned, read from ``committed``. With nothing
        committed the consumer starts at the log's start (auto.offset.reset=earliest):
        offset 0, or, past retention, the gap below it is passed at once."""
        key = (topic, p)
        self.gaps.pop(key, None)
        self.routed_to[key] = committed if committed is not None and committed >= 0 else 0

    def revoked(self, topic: str, p: int) -> None:
        """Any partition revoked: a gap seen while it was owned is not timed on from
        there if it comes back (its 10 s would have passed at once)."""
        self.gaps.pop((topic, p), None)
        self.routed_to.pop((topic, p), None)

    def events_up_to_a_gap(self, topic: str, p: int, msgs: list[Message]) -> list[Message]:
        """The fetched records of an ``events`` partition to route now: as
        :meth:`up_to_a_gap`, from the offset after the last one routed. Skipping an
        event there would lose its runs silently, as a skipped ``run.requested`` did.
        Records below that offset are routed again, as before the guard: the consumer
        only goes back when its position was reset, and a run's dedupe key makes a
        second request of the same run a no-op. A partition waiting on a gap holds back
        only its own events; other partitions' go on (send order across partitions is
        kept within a batch, not across a re-read)."""
        key = (topic, p)
        expected = self.routed_to.get(key)
        if expected is not None and msgs:
            msgs = self.up_to_a_gap(topic, p, msgs, expected)
        if msgs:
            self.routed_to[key] = max(m.offset() or 0 for m in msgs) + 1
        return msgs

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
        try:
            low, _high = self.consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                             timeout=5, cached=False)
        except KafkaException as exc:  # a slow broker: the log start is not known now
            log.warning("%s[%d]: log start not read (%s)", topic, p, exc)
            low = -1
        if low > nxt or time.monotonic() - since[1] > GAP_WAIT_S:
            past = msgs[len(keep)].offset() or 0
            log.error("%s[%d]: records from offset %d to %d are not readable (log starts "
                      "at %d); going on past them", topic, p, nxt, past - 1, low)
            self.gaps.pop(key, None)
            return msgs
        log.warning("%s[%d]: fetched from offset %d while %d is not read yet; reading "
                    "again from %d", topic, p, (msgs[len(keep)].offset()), nxt, nxt)
        self.consumer.seek(TopicPartition(topic, p, nxt))
        return keep
