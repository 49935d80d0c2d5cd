"""Reading a topic newest first, for the events history and the dead letters.

The topic is the history: there is no copy in RocksDB. A read assigns partitions to a
consumer outside any group (nothing is committed), finds each partition's end, and reads
backwards in chunks, merging partitions by record timestamp. Every read is bounded: at
most ``max_scan`` records and ``budget_s`` seconds; a read that runs out returns what it
found with a cursor to go on from. A cursor holds, per partition, the offset below which
the next page starts, so pages never repeat or skip a record whatever the timestamps.

A partition's end is learnt from a fetch, not from ``ListOffsets``: the dev broker
(Tansu 0.6) answers ``ListOffsets`` wrongly (latest = 1, any time = 0) but every fetch
response carries the right high watermark. On Apache Kafka both agree, so one way
serves both. Blocking: call from a thread (``asyncio.to_thread``); one read at a time.
"""

from __future__ import annotations

import base64
import heapq
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, Message, TopicPartition

from engine.runtime.ranges import fetch_range
from topics.settings import Settings

# Records fetched per partition per step backwards.
CHUNK = 200
DEFAULT_MAX_SCAN = 20_000
DEFAULT_BUDGET_S = 5.0


class CursorError(ValueError):
    """A cursor that is not one this reader gave out."""


def encode_cursor(upper: dict[int, int]) -> str:
    """Per-partition exclusive upper offsets as an opaque URL-safe string."""
    raw = json.dumps({str(p): o for p, o in sorted(upper.items())}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, partitions: int) -> dict[int, int]:
    """The inverse of :func:`encode_cursor`; raises :class:`CursorError`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        upper = {int(p): int(o) for p, o in data.items()}
    except (ValueError, TypeError, AttributeError):
        raise CursorError("cursor is not valid (give the cursor of the previous page)"
                          ) from None
    if any(not 0 <= p < partitions or o < 0 for p, o in upper.items()):
        raise CursorError("cursor is not valid for this topic")
    return upper


@dataclass
class Found:
    """One page: the kept items (newest first), the cursor of the next page (None when
    nothing older is left), how many records were read, whether a bound cut it short."""

    items: list[Any] = field(default_factory=list)
    cursor: str | None = None
    scanned: int = 0
    truncated: bool = False


class TopicReader:
    """Reads one topic newest first (see the module doc). Thread-safe: reads are
    serialized on one consumer, created on first use."""

    def __init__(self, settings: Settings, topic: str, *, max_scan: int = DEFAULT_MAX_SCAN,
                 budget_s: float = DEFAULT_BUDGET_S, partitions: int | None = None) -> None:
        self.settings = settings
        self.topic = topic
        # The catalog's count for this topic (most have settings.partitions).
        self.partitions = settings.partitions if partitions is None else partitions
        self.max_scan = max_scan
        self.budget_s = budget_s
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None

    def _ensure(self) -> Consumer:
        if self._consumer is None:
            tuning = self.settings.consumer_tuning()
            self._consumer = Consumer(self.settings.client_config({
                # Never joins: partitions are assigned by hand and nothing is committed.
                "group.id": f"stepstream-reader-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False, "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 20,
                "fetch.message.max.bytes": tuning["fetch.message.max.bytes"],
                "enable.partition.eof": True, "socket.nagle.disable": True}))
        return self._consumer

    def close(self) -> None:
        """Close the consumer (a later read opens a new one)."""
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()

    def read(self, keep: Callable[[Message], Any | None], *, limit: int,
             partitions: list[int] | None = None, cursor: str | None = None,
             stop_below_ms: int | None = None) -> Found:
        """Up to ``limit`` items ``keep(message)`` returns (not None), newest first,
        from ``partitions`` (all if None), below ``cursor``. A partition is left once a
        record's timestamp is below ``stop_below_ms`` (a lower time bound). Raises
        :class:`CursorError` for a bad cursor, :class:`KafkaException` if the broker
        does not answer."""
        upper = decode_cursor(cursor, self.partitions) if cursor else {}
        wanted = sorted(set(range(self.partitions) if partitions is None else partitions))
        with self._lock:
            try:
                return self._read(keep, limit, wanted, upper, stop_below_ms)
            except KafkaException:
                # A consumer that failed mid-read may hold a broken assignment: fresh one.
                consumer, self._consumer = self._consumer, None
                if consumer is not None:
                    consumer.close()
                raise

    # --- internals ---------------------------------------------------------------------

    def _read(self, keep: Callable[[Message], Any | None], limit: int, wanted: list[int],
              upper: dict[int, int], stop_below_ms: int | None) -> Found:
        deadline = time.monotonic() + self.budget_s
        consumer = self._ensure()
        lows, highs = self._bounds(consumer, wanted, deadline)
        found = Found()
        # Where each partition's next (older) record is: exclusive upper offset.
        pos = {p: min(upper.get(p, highs[p]), highs[p]) for p in wanted}
        streams = [self._backwards(consumer, p, lows[p], pos, deadline, found)
                   for p in wanted]
        # Newest first across partitions by (timestamp, partition, offset).
        merged = heapq.merge(*streams, key=lambda m: (_ts(m), m.partition() or 0, m.offset() or 0),
                             reverse=True)
        done: set[int] = set()
        for msg in merged:
            p = msg.partition() or 0
            if p in done:
                continue
            if stop_below_ms is not None and _ts(msg) < stop_below_ms:
                done.add(p)
                pos[p] = lows[p]  # nothing older can match
                continue
            pos[p] = msg.offset() or 0
            item = keep(msg)
            if item is not None:
                found.items.append(item)
                if len(found.items) >= limit:
                    break
        remaining = {p: o for p, o in pos.items() if o > lows[p]}
        found.cursor = encode_cursor(remaining) if remaining else None
        return found

    def _bounds(self, consumer: Consumer, wanted: list[int],
                deadline: float) -> tuple[dict[int, int], dict[int, int]]:
        """Each partition's (log start, end) offsets. The end comes from a fetch's high
        watermark (see the module doc): fetch from the reported end minus one, which
        on Kafka is the last record and on a broker that under-reports is older."""
        lows: dict[int, int] = {}
        starts = []
        for p in wanted:
            lo, hi = consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=max(0.1, deadline - time.monotonic()))
            lows[p] = max(lo, 0)
            starts.append(TopicPartition(self.topic, p, max(lo, hi - 1, 0)))
        consumer.assign(starts)
        highs: dict[int, int] = {}
        while len(highs) < len(wanted):
            if time.monotonic() > deadline:
                raise KafkaException(f"no fetch answer from {self.topic} in time")
            consumer.consume(500, 0.05)
            for p in wanted:
                if p in highs:
                    continue
                _lo, hi = consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                         cached=True)
                if hi is not None and hi >= 0 and hi != OFFSET_INVALID:
                    highs[p] = hi
        return lows, highs

    def _backwards(self, consumer: Consumer, p: int, low: int, pos: dict[int, int],
                   deadline: float, found: Found) -> Iterator[Message]:
        """Partition ``p``'s records from ``pos[p]`` down to ``low``, newest first,
        read in chunks; stops at the scan or time bound (marking ``found``)."""
        upper = pos[p]
        while upper > low:
            if found.scanned >= self.max_scan or time.monotonic() > deadline:
                found.truncated = True
                return
            start = max(low, upper - CHUNK)
            chunk = self._fetch(consumer, p, start, upper, deadline)
            found.scanned += len(chunk)
            yield from reversed(chunk)
            upper = start

    def _fetch(self, consumer: Consumer, p: int, start: int, end: int,
               deadline: float) -> list[Message]:
        """The records of partition ``p`` in [start, end) (fewer if some were deleted)."""
        return fetch_range(consumer, self.topic, p, start, end, deadline, CHUNK)


def _ts(msg: Message) -> int:
    kind, ts = msg.timestamp()
    return ts if kind and ts > 0 else 0
