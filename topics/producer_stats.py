"""How much a producer has sent, from librdkafka's statistics: the records, and the produce
requests they went out in (on the dev broker each request costs about 1 ms of broker CPU,
so requests per run is a cost of its own).

Off unless ``STEPSTREAM_PRODUCER_STATS_MS`` (Settings.producer_stats_ms) is above 0; then
the engine's and the worker's producers emit statistics at that interval and report a
line (``producer stats: client=... records=N produce_requests=N requests=N bytes=N``)
whenever the counts changed since the last one, and once more when they close. The
caller supplies where lines go (pure here: no I/O).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PREFIX = "producer stats: "


@dataclass(frozen=True, slots=True)
class ProduceCounts:
    """Totals since the producer started."""

    records: int = 0  # txmsgs: records sent (retries excluded)
    produce_requests: int = 0  # Produce requests to every broker
    requests: int = 0  # tx: every request (metadata, init-producer-id, ...)
    bytes: int = 0  # txmsg_bytes

    def line(self, client_id: str) -> str:
        return (f"{PREFIX}client={client_id} records={self.records} "
                f"produce_requests={self.produce_requests} requests={self.requests} "
                f"bytes={self.bytes}")


def produce_counts(stats_json: str) -> ProduceCounts:
    """The counts in one librdkafka statistics document (``stats_cb``'s argument)."""
    return _counts(json.loads(stats_json))


def _counts(doc: dict[str, Any]) -> ProduceCounts:
    produce = sum(int((b.get("req") or {}).get("Produce", 0))
                  for b in (doc.get("brokers") or {}).values())
    return ProduceCounts(records=int(doc.get("txmsgs", 0)), produce_requests=produce,
                         requests=int(doc.get("tx", 0)), bytes=int(doc.get("txmsg_bytes", 0)))


def parse_line(line: str) -> tuple[str, ProduceCounts] | None:
    """``(client id, counts)`` of a reported line, or None if it is not one."""
    at = line.find(PREFIX)
    if at < 0:
        return None
    fields = dict(f.split("=", 1) for f in line[at + len(PREFIX):].split() if "=" in f)
    try:
        return fields["client"], ProduceCounts(
            records=int(fields["records"]), produce_requests=int(fields["produce_requests"]),
            requests=int(fields["requests"]), bytes=int(fields["bytes"]))
    except (KeyError, ValueError):
        return None


class ProducerStats:
    """The statistics of one producer: :meth:`config` goes into its configuration,
    :meth:`close` after its last flush."""

    def __init__(self, client_id: str, interval_ms: int, report: Callable[[str], None]) -> None:
        self.client_id = client_id
        self.interval_ms = interval_ms
        self.report = report
        self.latest = ProduceCounts()
        # When librdkafka made the latest document (its "ts": CLOCK_MONOTONIC, in us).
        self.latest_us = 0
        self._reported: ProduceCounts | None = None

    @property
    def enabled(self) -> bool:
        return self.interval_ms > 0

    def config(self) -> dict[str, Any]:
        """librdkafka settings: none when disabled."""
        if not self.enabled:
            return {}
        return {"statistics.interval.ms": self.interval_ms, "stats_cb": self.on_stats}

    def on_stats(self, stats_json: str) -> None:
        """The ``stats_cb``: keep the counts, report them if they changed."""
        try:
            doc = json.loads(stats_json)
            self.latest, self.latest_us = _counts(doc), int(doc.get("ts", 0))
        except (ValueError, TypeError, AttributeError):
            return  # a malformed document is no reason to disturb a producer
        if self.latest != self._reported:
            self._reported = self.latest
            self.report(self.latest.line(self.client_id))

    def close(self, poll: Callable[[float], Any],
              clock: Callable[[], float] = time.monotonic) -> None:
        """After the producer's last flush: wait (``poll``) for a statistics document
        made after now, which counts every request, and report it. Documents made
        earlier may still be queued: librdkafka hands them over only when polled."""
        if not self.enabled:
            return
        since_us = int(clock() * 1_000_000)
        deadline = clock() + 3 * self.interval_ms / 1000 + 1
        while self.latest_us < since_us and clock() < deadline:
            poll(self.interval_ms / 4000)
        self.report(self.latest.line(self.client_id) + " final")
