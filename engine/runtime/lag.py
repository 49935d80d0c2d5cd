"""The engine's consumer lag on its input topics, for ``GET /health`` (and, at the end,
its producer's statistics when asked for: :func:`producer_stats`).

Lag of a partition = its high watermark - the engine's position in it; a topic's lag is
the sum over the partitions this process is assigned. It is sampled on the processor
thread between batches, so a position counts only records whose batch is processed
(folded, emits produced), and read from any thread as an immutable snapshot.

The high watermark is the one the last fetch response carried (librdkafka's cached
value): Tansu answers ListOffsets with watermarks lower than the real end
(docs/architecture.md, Broker notes), while its fetch responses carry the right one.
A partition nothing was consumed from since it was assigned has no position yet; the
offset it was assigned at stands in (else the group's committed offset, else the start
of the log, as ``auto.offset.reset=earliest`` would do).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import TopicPartition

from topics.producer_stats import ProducerStats
from topics.settings import Settings

log = logging.getLogger("stepstream.lag")

SAMPLE_EVERY_S = 0.25
_COMMITTED_TIMEOUT_S = 5.0


def partition_lag(high: int, position: int, start: int) -> int | None:
    """Records of a partition not yet processed; None while its end is unknown.

    ``position`` is the next offset to process (negative: none consumed yet, so
    ``start``, the offset processing starts at, stands in; negative too: unknown)."""
    if high < 0:
        return None
    at = position if position >= 0 else start
    if at < 0:
        return None
    return max(0, high - at)


def topic_lags(names: dict[str, str], parts: Iterable[tuple[str, int | None]]
               ) -> dict[str, int | None]:
    """Sum ``(topic, lag)`` pairs per short name (``names``: full topic -> short name);
    a topic with any partition of unknown lag is None. Topics without partitions here
    have lag 0 (another engine process owns them)."""
    out: dict[str, int | None] = {short: 0 for short in names.values()}
    for topic, lag in parts:
        short = names.get(topic)
        if short is None:
            continue
        prev = out[short]
        out[short] = None if prev is None or lag is None else prev + lag
    return out


STALL_S = 30.0


class ProgressWatch:
    """Notices an input partition that has records waiting yet does not move, which
    otherwise shows only as runs that never start. Pure (the caller logs what
    :meth:`observe` returns), so it is tested alone."""

    def __init__(self, after_s: float = STALL_S) -> None:
        self.after_s = after_s
        self._seen: dict[tuple[str, int], tuple[int, float, bool]] = {}

    def forget(self, topic: str, partition: int) -> None:
        """A partition (re)assigned: it is timed from its next sample, not from when it
        was last seen here (it did not move meanwhile because it was not ours)."""
        self._seen.pop((topic, partition), None)

    def observe(self, topic: str, partition: int, position: int, lag: int | None,
                now: float) -> str | None:
        """What to log about this sample of a partition: that it has stood still with
        ``lag`` records waiting for ``after_s`` (once per stall), that it moves again,
        or nothing."""
        key = (topic, partition)
        seen = self._seen.get(key)
        if seen is None or seen[0] != position:
            self._seen[key] = (position, now, False)
            if seen is not None and seen[2]:
                return (f"{topic}[{partition}] moves again after {now - seen[1]:.0f} s "
                        f"at offset {seen[0]}")
            return None
        _, since, warned = seen
        if lag and not warned and now - since >= self.after_s:
            self._seen[key] = (position, since, True)
            return (f"{topic}[{partition}] has not moved from offset {position} for "
                    f"{now - since:.0f} s with {lag} record(s) waiting")
        return None


class LagMeter:
    """Samples the consumer's lag (:meth:`sample`, processor thread only) and keeps the
    latest answer for :meth:`report` (any thread)."""

    def __init__(self, topics: dict[str, str], *, every_s: float = SAMPLE_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topics = topics
        self.every_s = every_s
        self.clock = clock
        self._starts: dict[tuple[str, int], int] = {}
        self._next = 0.0
        self._lock = threading.Lock()
        self._last: tuple[float, dict[str, int | None]] | None = None
        self._detail: list[tuple[str, int, int | None]] = []
        self._last_detail: list[tuple[str, int, int | None]] = []
        self.watch = ProgressWatch()

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """The offsets partitions were assigned at (negative: the group's committed)."""
        for tp in partitions:
            self._starts[(tp.topic, tp.partition)] = tp.offset
            self.watch.forget(tp.topic, tp.partition)

    def sample(self, consumer: Any) -> None:
        """Measure now if the last sample is older than ``every_s``. Never raises: the
        lag is a report, and must not stop the loop it reports on."""
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.every_s
        try:
            lags = self._measure(consumer, now)
        except Exception:
            log.warning("could not measure consumer lag", exc_info=True)
            return
        with self._lock:
            self._last = (now, lags)
            self._last_detail = self._detail

    def _measure(self, consumer: Any, now: float) -> dict[str, int | None]:
        assignment = [tp for tp in consumer.assignment() if tp.topic in self.topics]
        positions = consumer.position(assignment) if assignment else []
        unknown = [TopicPartition(tp.topic, tp.partition) for tp in positions
                   if tp.offset < 0 and self._starts.get((tp.topic, tp.partition), -1) < 0]
        if unknown:
            # Once per assignment at most: the committed offset becomes the start.
            for c in consumer.committed(unknown, timeout=_COMMITTED_TIMEOUT_S):
                start = c.offset
                if start < 0:
                    start, _high = consumer.get_watermark_offsets(c, cached=True)
                self._starts[(c.topic, c.partition)] = start
        parts, detail = [], []
        for tp in positions:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            lag = partition_lag(high, tp.offset, self._starts.get((tp.topic, tp.partition), -1))
            parts.append((tp.topic, lag))
            detail.append((self.topics[tp.topic], tp.partition, lag))
            said = self.watch.observe(tp.topic, tp.partition, tp.offset, lag, now)
            if said is not None:
                log.warning("%s", said)
        self._detail = detail
        return topic_lags(self.topics, parts)

    def partitions(self) -> list[tuple[str, int, int | None]]:
        """The last sample per partition: ``[(topic short name, partition, lag)]``."""
        with self._lock:
            return list(self._last_detail)

    def report(self) -> dict[str, Any] | None:
        """``{"events": n, "runs": n, "waits": n, "total": n, "sampled_ms_ago": ms}``
        (a lag is None while unknown), or None before the first sample."""
        with self._lock:
            last = self._last
        if last is None:
            return None
        at, lags = last
        values = list(lags.values())
        total = None if any(v is None for v in values) else sum(v or 0 for v in values)
        return {**lags, "total": total,
                "sampled_ms_ago": int((self.clock() - at) * 1000)}


def producer_stats(client_id: str, settings: Settings) -> ProducerStats:
    """What a producer of the engine sent, logged when STEPSTREAM_PRODUCER_STATS_MS is on
    (beside the lag: both are how the engine reports on its own work)."""
    stats_log = logging.getLogger("stepstream.stats")
    if settings.producer_stats_ms > 0:
        # Asked for explicitly, so shown whatever the engine's log level.
        stats_log.setLevel(logging.INFO)
    return ProducerStats(client_id, settings.producer_stats_ms, stats_log.info)
