"""The peer table: which engine processes are up, where their API is, what they own.

Each engine writes an advertisement to the ``engines`` topic (compacted, one partition,
keyed by the engine's API URL): its URL, the ``runs`` partitions it owns, the time, and
its heartbeat interval. It writes one every heartbeat and at once when its partitions
change, and a tombstone when it stops cleanly. Every engine reads the whole topic, so
each holds the same table; an engine whose last advertisement is older than
:data:`STALE_AFTER_BEATS` of its heartbeats (killed, hung, cut off) drops out of it.

Why a topic and not the consumer group's own member list (DescribeGroups): on the dev
broker (Tansu 0.6) ``describe_consumer_groups`` answers with no members and
ListGroups with no groups (measured), and a member's metadata cannot carry a URL with
librdkafka anyway.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from engine.clock import now_ms
from topics.catalog import Catalog
from topics.settings import Settings

log = logging.getLogger("stepstream.peers")

# An engine is gone once this many heartbeats are missed (plus SKEW_MS for the clocks of
# two machines, which the advertisement's time comes from).
STALE_AFTER_BEATS = 3
SKEW_MS = 1000
STOP_FLUSH_S = 2.0
FETCH_WAIT_MS = 500


@dataclass(frozen=True, slots=True)
class Advert:
    """One engine's advertisement."""

    url: str
    partitions: frozenset[int]
    at_ms: int
    heartbeat_ms: int

    def live(self, now: int) -> bool:
        """Whether the engine advertised recently enough to be asked."""
        return now - self.at_ms <= STALE_AFTER_BEATS * self.heartbeat_ms + SKEW_MS

    def encode(self) -> bytes:
        return json.dumps({"url": self.url, "partitions": sorted(self.partitions),
                           "at_ms": self.at_ms, "heartbeat_ms": self.heartbeat_ms}
                          ).encode()


def decode_advert(raw: bytes) -> Advert | None:
    """An advertisement, or None for one this version cannot read (never an error: a
    stranger's record on the topic must not stop the table)."""
    try:
        body = json.loads(raw)
        url = body["url"]
        parts = frozenset(int(p) for p in body["partitions"])
        at, beat = int(body["at_ms"]), int(body["heartbeat_ms"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or beat < 1:
        return None
    return Advert(url, parts, at, beat)


def advertised_url(configured: str | None, bound: Sequence[str]) -> str:
    """The URL peers reach this engine at: ``STEPSTREAM_ADVERTISED_URL`` if set, else the
    first address the API is bound to, with a wildcard host (``--host 0.0.0.0``) replaced
    by this machine's name."""
    if configured:
        return configured.rstrip("/")
    if not bound:
        raise ValueError("the API is bound to no address")
    parts = urlsplit(bound[0])
    if parts.hostname in ("0.0.0.0", "::"):
        parts = parts._replace(netloc=f"{socket.getfqdn()}:{parts.port}")
    return urlunsplit(parts)


class Peers:
    """Advertises this engine and keeps the table of the others, on its own thread.

    ``owned`` gives the ``runs`` partitions this engine owns; ``changed`` is set by the
    processor when they change, and makes the next advertisement go out at once.
    """

    def __init__(self, settings: Settings, owned: Callable[[], list[int]],
                 changed: threading.Event) -> None:
        self.settings = settings
        self.topic = Catalog(settings).engines
        self.owned = owned
        self.changed = changed
        self.heartbeat_ms = settings.peer_heartbeat_ms
        self.url: str | None = None
        self._table: dict[str, Advert] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None

    def start(self, url: str) -> None:
        """Advertise this engine at ``url`` and begin reading the table."""
        self.url = url
        self._producer = Producer(self.settings.client_config({
            **self.settings.producer_tuning(), "client.id": "stepstream-engine-peers"}))
        self._consumer = Consumer(self.settings.client_config({
                                   **self.settings.consumer_tuning(),
                                   "group.id": self.settings.prefix + "engine-peers",
                                   "client.id": "stepstream-engine-peers",
                                   # The table may lag by this much; on Tansu a fetch
                                   # is answered only when this expires, and 10 ms
                                   # would add 100 idle fetches a second per engine.
                                   "fetch.wait.max.ms": FETCH_WAIT_MS}))
        # Offset 0: the whole table (compacted); no group membership, no commits.
        self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        self._thread = threading.Thread(target=self._run, name="stepstream-peers",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Withdraw the advertisement (peers stop asking at once) and stop."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._producer is not None and self.url is not None:
            try:
                self._producer.produce(self.topic, None, self.url, partition=0)
                self._producer.flush(STOP_FLUSH_S)
            except Exception:  # the broker may be gone already; peers time us out
                log.debug("withdrawing the advertisement failed", exc_info=True)
        if self._consumer is not None:
            self._consumer.close()

    def live(self) -> list[Advert]:
        """The other engines that advertised recently, by URL."""
        now = now_ms()
        with self._lock:
            return sorted((a for a in self._table.values()
                           if a.url != self.url and a.live(now)), key=lambda a: a.url)

    def table(self) -> list[Advert]:
        """Every advertisement held, this engine's and stale ones too, by URL."""
        with self._lock:
            return sorted(self._table.values(), key=lambda a: a.url)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the ``engines`` topic to the table."""
        if value is None:
            if key is not None:
                with self._lock:
                    self._table.pop(key.decode(errors="replace"), None)
            return
        advert = decode_advert(value)
        if advert is None:
            log.warning("unreadable engine advertisement %r; ignored", value[:200])
            return
        with self._lock:
            held = self._table.get(advert.url)
            if held is None or held.at_ms <= advert.at_ms:
                self._table[advert.url] = advert

    def _run(self) -> None:
        next_beat = 0.0
        while not self._stopping.is_set():
            try:
                if self.changed.is_set() or time.monotonic() >= next_beat:
                    self.changed.clear()
                    self._advertise()
                    next_beat = time.monotonic() + self.heartbeat_ms / 1000
                self._read(0.1)
            except Exception:
                # The table is an aid to the API: it must never stop the engine.
                log.exception("peer table: round failed; going on")
                self._stopping.wait(1.0)

    def _advertise(self) -> None:
        assert self._producer is not None and self.url is not None
        advert = Advert(self.url, frozenset(self.owned()), now_ms(), self.heartbeat_ms)
        self._producer.produce(self.topic, advert.encode(), self.url, partition=0,
                               on_delivery=_log_failure)
        self._producer.poll(0)

    def _read(self, wait_s: float) -> None:
        assert self._consumer is not None
        for m in self._consumer.consume(100, wait_s):
            self._apply_message(m)

    def _apply_message(self, m: Message) -> None:
        err = m.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("peer table: consume error: %s", err)
            return
        key = m.key()
        self.apply(key if isinstance(key, bytes) else None, m.value())


def _log_failure(err: Any, _msg: Any) -> None:
    if err is not None:
        log.warning("engine advertisement not stored: %s", err)
