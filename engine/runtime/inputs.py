"""Routing the records the engine reads but does not fold: ``events`` (stepstream's
events, JSON events from any producer, invoke and re-run commands) and the source
topics functions trigger on (``sdk.TriggerTopic``). Each record becomes the records to
produce — run requests, the matcher's copy on ``waits`` — or a dead letter saying why
not. The processor produces them and commits the input offset after."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Message, TopicPartition

from engine import fold
from engine.runtime import json_events
from engine.runtime.batch import dead_letter
from engine.runtime.router import Registry, route, route_invoke, route_rerun
from topics.catalog import Catalog, partition_for
from topics.codec import DecodeError, decode, encode
from topics.records import DeadLetter, Event, InvokeRequested, RerunRequested
from topics.settings import Settings

log = logging.getLogger("stepstream.processor")

# (topic, partition, key, value): one record to produce.
Target = tuple[str, int, str | bytes | None, bytes]


class InputRouter:
    """The processor's routing of unfolded inputs; ``emit_target`` and ``dead_target``
    turn a fold emit and a dead letter into a :data:`Target` (the processor's, so dead
    letters are counted in one place)."""

    def __init__(self, catalog: Catalog, settings: Settings, registry: Registry, *,
                 emit_target: Callable[[fold.Emit], Target],
                 dead_target: Callable[[DeadLetter], Target]) -> None:
        self.catalog = catalog
        self.settings = settings
        self.registry = registry
        self._emit_target = emit_target
        self._dead_target = dead_target

    def source_topics(self) -> tuple[str, ...]:
        """The topics functions trigger on (``sdk.TriggerTopic``); never ours."""
        ours = {s.name for s in self.catalog.specs}
        return tuple(sorted(t for t in self.registry.sources() if t not in ours))

    def start_sources(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A source partition this group never committed starts where its triggers say:
        ``latest`` skips the topic's history; otherwise the group's earliest rule
        applies."""
        sources = self.registry.sources()
        latest = [tp for tp in partitions
                  if tp.topic in sources and sources[tp.topic].start == "latest"]
        if not latest:
            return
        for tp in consumer.committed(latest, timeout=30):
            if tp.offset < 0:
                for mine in latest:
                    if (mine.topic, mine.partition) == (tp.topic, tp.partition):
                        mine.offset = OFFSET_END

    def route(self, m: Message, now: int) -> list[Target]:
        if m.topic() != self.catalog.events:
            return self._route_source(m, now)
        try:
            rec = decode(m.value(), max_bytes=self.settings.max_record_bytes,
                         max_depth=self.settings.max_depth,
                         expect=(Event, InvokeRequested, RerunRequested))
        except DecodeError as exc:
            found = self._json_event(m, exc, now)
            if isinstance(found, DeadLetter):
                return [self._dead_target(found)]
            rec, value = found
        else:
            value = m.value() or b""
        if isinstance(rec, InvokeRequested):
            return [self._emit_target(e) for e in route_invoke(
                rec, self.registry, now_ms=now,
                backoff_base_ms=self.settings.retry_backoff_base_ms)]
        if isinstance(rec, RerunRequested):
            rerun = route_rerun(rec, self.registry, now_ms=now,
                                backoff_base_ms=self.settings.retry_backoff_base_ms)
            if isinstance(rerun, str):
                log.error("%s", rerun)
                return [self._dead_target(dead_letter(m, rerun, now,
                                                      self.settings.max_record_bytes))]
            return [self._emit_target(fold.Emit("runs", rerun.partition_key, rerun))]
        assert isinstance(rec, Event)
        return self._routed(rec, value, now)

    def _routed(self, rec: Event, value: bytes, now: int,
                source: dict[str, Any] | None = None
                ) -> list[Target]:
        out: list[Target] = []
        for req in route(rec, self.registry, now_ms=now, source=source,
                         backoff_base_ms=self.settings.retry_backoff_base_ms):
            p = partition_for(req.partition_key, self.catalog.partitions)
            out.append((self.catalog.runs, p, req.partition_key, encode(req)))
        # Every event also goes to the matcher's partition for its name, as it is: the
        # waits registered there before it are checked against it (engine/matcher.py).
        out.append((self.catalog.waits, partition_for(rec.name, self.catalog.partitions),
                    rec.name, value))
        return out

    def _route_source(self, m: Message, now: int
                      ) -> list[Target]:
        """A record of a source topic: its events, routed like any event (and copied
        to ``waits``), or a dead letter saying why it is none."""
        topic = m.topic() or ""
        source = self.registry.sources().get(topic)
        if source is None:
            return []  # its last trigger was removed meanwhile
        try:
            events, where = json_events.source_event(
                m.value(), key=m.key(), headers=m.headers(), topic=topic,
                partition=m.partition() or 0, offset=m.offset() or 0,
                record_ts_ms=m.timestamp()[1], event_names=source.events,
                settings=self.settings)
        except json_events.NotAnEvent as exc:
            if m.value() is None:
                return []  # a tombstone deletes a key; it is no event
            return [self._dead_target(dead_letter(
                m, f"a record of source topic {topic} is not an event: {exc}", now,
                self.settings.max_record_bytes))]
        out: list[Target] = []
        for event in events:
            out += self._routed(event, encode(event), now, source=where)
        return out

    def _json_event(self, m: Message, exc: DecodeError, now: int
                    ) -> tuple[Event, bytes] | DeadLetter:
        """A JSON event from another Kafka producer (engine/runtime/json_events.py) and
        its msgpack value, or the dead letter saying which formats are accepted."""
        _kind, ts = m.timestamp()
        try:
            return json_events.event_from_json(
                m.value(), topic=m.topic() or "", partition=m.partition() or 0,
                offset=m.offset() or 0, record_ts_ms=ts, settings=self.settings)
        except json_events.NotAnEvent as not_json:
            return dead_letter(m, json_events.reason(exc, not_json), now,
                               self.settings.max_record_bytes)
