"""The events history and the dead letters, read from their topics (Inngest's shapes), and
starting a run of a function from the API.

* ``GET /v1/events?name=&received_after=&received_before=&cursor=&limit=`` — newest first
* ``GET /v1/events/{id}`` — one event
* ``GET /v1/dead-letters?cursor=&limit=`` — records in ``dlq``, newest first
* ``POST /v1/functions/{id}/invoke`` — body ``{"data": {...}}``: a run of that function

Events are not kept in RocksDB: the ``events`` topic is the history, so it reaches back
as far as the topic's retention (docs/architecture.md, "Events history"). Each read is
bounded (records scanned, seconds) and runs in a thread; any engine answers the same,
since every engine can read every partition.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from aiohttp import web
from confluent_kafka import KafkaException, Message

from engine.api.event_body import BodyError, load_json
from engine.api.ingest import IngestError
from engine.api.offloop import json_built_off_loop
from engine.api.topic_reader import CursorError, Found, TopicReader
from engine.api.views import parse_time_ms, rfc3339
from engine.clock import now_ms
from engine.runtime.json_events import NotAnEvent, event_from_json
from topics.catalog import Catalog, event_partition
from topics.codec import DecodeError, PayloadError, check_payload, decode
from topics.ids import new_ulid, run_id_for
from topics.records import CancellationCreated, DeadLetter, Event, InvokeRequested
from topics.settings import Settings

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_INVOKE_BODY_BYTES = 1024 * 1024


class History:
    """The topic readers of one engine process (created on first use, closed with the app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.events = TopicReader(settings, self.catalog.events)
        self.dlq = TopicReader(settings, self.catalog.dlq)
        self.bulk_cancels = TopicReader(
            settings, self.catalog.cancellations,
            partitions=self.catalog.spec(self.catalog.cancellations).partitions)
        # Reads wait on the broker: on a thread of their own, not the API's query
        # threads, so a slow fetch never holds up run queries (each reader serves one
        # read at a time anyway).
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="stepstream-topic-reads")

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (one of this object's reads) on the readers' thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.events.close()
        self.dlq.close()
        self.bulk_cancels.close()
        self._reads.shutdown(wait=False)

    def list_events(self, *, limit: int, cursor: str | None = None, name: str | None = None,
                    after: int | None = None, before: int | None = None) -> Found:
        """Events newest first by the time the broker received them. ``name`` filters
        every partition: stepstream's clients put a name on one partition, but a JSON
        event from another producer may be on any."""
        parts = None
        # An event stored twice (a sender's retry, a step's send produced again after a
        # crash) starts one run; it is listed once per page too.
        seen: set[str] = set()

        def keep(msg: Message) -> dict[str, Any] | None:
            view = self._event_view(msg)
            if view is None or (name is not None and view["name"] != name):
                return None
            if before is not None and _received(msg) >= before:
                return None
            if view["id"] in seen:
                return None
            seen.add(view["id"])
            return view

        return self.events.read(keep, limit=limit, partitions=parts, cursor=cursor,
                                stop_below_ms=after)

    def find_event(self, event_id: str, name: str | None = None) -> dict[str, Any] | None:
        """The newest event with this id (in its name's partition when the name is known),
        or None if the bounded scan does not find it."""
        parts = None if name is None else [event_partition(name, self.settings.partitions)]
        wanted = event_id.encode("utf-8", "surrogatepass")

        def keep(msg: Message) -> dict[str, Any] | None:
            if msg.key() == wanted:
                return self._event_view(msg)
            value = msg.value()
            if value and value[:1] == b"{":  # a JSON event: its id may not be its key
                view = self._event_view(msg)
                return view if view is not None and view["id"] == event_id else None
            return None

        found = self.events.read(keep, limit=1, partitions=parts)
        if found.items or parts is None:
            return found.items[0] if found.items else None
        # Not in its name's partition: a JSON event from another producer may be anywhere.
        found = self.events.read(keep, limit=1, partitions=None)
        return found.items[0] if found.items else None

    def cancellations(self, *, limit: int) -> list[CancellationCreated]:
        """The newest ``limit`` bulk cancellations (``POST /v1/cancellations``)."""
        def keep(msg: Message) -> CancellationCreated | None:
            try:
                rec = decode(msg.value(), max_bytes=self.settings.max_record_bytes,
                             expect=(CancellationCreated,))
            except DecodeError:
                return None  # only the API writes this topic; nothing else to show
            return rec if isinstance(rec, CancellationCreated) else None
        return self.bulk_cancels.read(keep, limit=limit).items

    def dead_letters(self, *, limit: int, cursor: str | None = None) -> Found:
        def keep(msg: Message) -> dict[str, Any] | None:
            return self._dead_view(msg)
        return self.dlq.read(keep, limit=limit, cursor=cursor)

    def _event_view(self, msg: Message) -> dict[str, Any] | None:
        try:
            rec = decode(msg.value(), max_bytes=self.settings.max_record_bytes,
                         max_depth=self.settings.max_depth)
        except DecodeError:
            # A JSON event from another producer is an event as the router reads it;
            # anything else was dead-lettered by the router (the DLQ page shows it).
            try:
                rec = event_from_json(msg.value(), topic=msg.topic() or "",
                                      partition=msg.partition() or 0,
                                      offset=msg.offset() or 0,
                                      record_ts_ms=msg.timestamp()[1],
                                      settings=self.settings)[0]
            except NotAnEvent:
                return None
        if not isinstance(rec, Event):
            return None  # a command (invoke, re-run): shown as its run, not an event
        return {"id": rec.id, "name": rec.name, "data": rec.data, "ts": rec.ts,
                "received_at": rfc3339(_received(msg)),
                "internal_id": f"{msg.partition()}:{msg.offset()}"}

    def _dead_view(self, msg: Message) -> dict[str, Any]:
        where = {"dlq_partition": msg.partition(), "dlq_offset": msg.offset()}
        try:
            rec = decode(msg.value(), max_bytes=self.settings.max_record_bytes * 2,
                         max_depth=self.settings.max_depth, expect=(DeadLetter,))
        except DecodeError as exc:
            return {**where, "topic": None, "partition": None, "offset": None,
                    "reason": f"undecodable dead letter: {exc}", "at": None,
                    "key": None, "value_preview": None, "extra": {}}
        assert isinstance(rec, DeadLetter)
        return {**where, "topic": rec.source_topic, "partition": rec.partition,
                "offset": rec.offset, "reason": rec.reason, "at": rfc3339(rec.ts),
                "key": _text(rec.key, 200), "value_preview": _text(rec.value, 2000),
                "extra": rec.extra}


def _received(msg: Message) -> int:
    kind, ts = msg.timestamp()
    return ts if kind and ts > 0 else 0


def _text(raw: bytes | None, limit: int) -> str | None:
    """Bytes shown to a person: UTF-8 where it is, else base64 (marked)."""
    if raw is None:
        return None
    cut = raw[:limit]
    try:
        return cut.decode("utf-8") + ("…" if len(raw) > limit else "")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(cut).decode()


HISTORY: web.AppKey[History | None] = web.AppKey("history")


def _history(request: web.Request) -> History:
    history = request.app.get(HISTORY)
    if history is None:
        raise web.HTTPServiceUnavailable(reason="this engine has no broker to read from")
    return history


def _int_param(request: web.Request, name: str, default: int, top: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= top:
        raise ValueError(f"{name} must be an integer from 1 to {top}, got {raw!r}")
    return value


def _page(found: Found) -> dict[str, Any]:
    body: dict[str, Any] = {"data": found.items,
                            "metadata": {"fetched_at": rfc3339(now_ms()),
                                         "cached_until": None, "scanned": found.scanned,
                                         "truncated": found.truncated}}
    if found.cursor is not None:
        body["cursor"] = found.cursor
    return body


def _bad(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


_EVENT_PARAMS = {"name", "received_after", "received_before", "cursor", "limit"}


def event_params(query: Any) -> dict[str, Any]:
    """The filters of ``GET /v1/events`` (also the dashboard's); raises ValueError."""
    unknown = sorted(set(query.keys()) - _EVENT_PARAMS)
    if unknown:
        raise ValueError(f"unknown query parameter(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_EVENT_PARAMS))})")
    out: dict[str, Any] = {"name": query.get("name") or None,
                           "cursor": query.get("cursor") or None}
    for key, field_name in (("received_after", "after"), ("received_before", "before")):
        raw = query.get(key)
        out[field_name] = None
        if raw:
            try:
                out[field_name] = parse_time_ms(raw)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
    if out["after"] is not None and out["before"] is not None and (
            out["after"] >= out["before"]):
        raise ValueError("received_after must be before received_before")
    return out


async def list_events(request: web.Request) -> web.Response:
    """``GET /v1/events``: ``{"data": [event...], "metadata": {...}, "cursor"?}``."""
    try:
        params = event_params(request.query)
        limit = _int_param(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    except ValueError as exc:
        return _bad(400, str(exc))
    history = _history(request)
    try:
        found = await history.call(history.list_events, limit=limit, **params)
    except CursorError as exc:
        return _bad(400, str(exc))
    except KafkaException as exc:
        return _bad(503, f"the events topic could not be read: {exc}")
    return await json_built_off_loop(_page, found)


async def get_event(request: web.Request, name_hint: str | None = None) -> web.Response:
    """``GET /v1/events/{event_id}``: ``{"data": event}``; 404 if not found in history."""
    event_id = request.match_info["event_id"]
    history = _history(request)
    try:
        event = await history.call(history.find_event, event_id, name_hint)
    except KafkaException as exc:
        return _bad(503, f"the events topic could not be read: {exc}")
    if event is None:
        return _bad(404, f"event {event_id} not found in the events topic (its history "
                         f"reaches back as far as the topic's retention)")
    return await json_built_off_loop(lambda: {"data": event})


async def list_dead_letters(request: web.Request) -> web.Response:
    """``GET /v1/dead-letters``: records of ``dlq``, newest first, with their source
    topic, partition, offset and reason."""
    unknown = sorted(set(request.query.keys()) - {"cursor", "limit"})
    if unknown:
        return _bad(400, f"unknown query parameter(s) {', '.join(unknown)} "
                         f"(known: cursor, limit)")
    try:
        limit = _int_param(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    except ValueError as exc:
        return _bad(400, str(exc))
    try:
        history = _history(request)
        found = await history.call(history.dead_letters, limit=limit,
                                        cursor=request.query.get("cursor") or None)
    except CursorError as exc:
        return _bad(400, str(exc))
    except KafkaException as exc:
        return _bad(503, f"the dlq topic could not be read: {exc}")
    return await json_built_off_loop(_page, found)


def parse_invoke_body(body: bytes) -> dict[str, Any]:
    """The ``data`` of an invoke body (``{"data": {...}}``, or empty for ``{}``);
    raises ValueError with a message."""
    if not body.strip():
        return {}
    try:
        payload = load_json(body)
    except BodyError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(payload, dict):
        raise ValueError('body must be a JSON object, like {"data": {"order": 1}}')
    unknown = sorted(payload.keys() - {"data"})
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (known: data)")
    data = payload.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("'data' must be a JSON object")
    try:  # the limits an event's data has: msgpack refused what they refuse with a 500
        check_payload(data, what="'data'")
    except PayloadError as exc:
        raise ValueError(str(exc)) from None
    return data


async def start_invoke(ingest: Any, fn_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Start a run of ``fn_id`` with ``data`` the way ``step.invoke`` does, without a
    parent: an ``invoke.requested`` on ``events`` that the router turns into the run
    (engine/runtime/router.py ``route_invoke``). Returns ``{"run_id", "event_id"}`` once
    stored; raises :class:`engine.api.ingest.IngestError`."""
    now = now_ms()
    event_id = new_ulid(now)
    record = InvokeRequested(fn_id=fn_id, data=data, event_id=event_id, parent={}, ts=now)
    await ingest.send_record(ingest.catalog.events, event_id, record)
    return {"run_id": run_id_for(fn_id, event_id, now), "event_id": event_id}


async def get_event_by_id(request: web.Request) -> web.Response:
    """``GET /v1/events/{event_id}``: one event, from the events topic. A run it started
    names its event, whose name picks the one partition to read."""
    from engine.api.http import _query  # the app's queries, as every /v1 path uses

    event_id = request.match_info["event_id"]
    name = None
    for state in await _query(request, "runs_for_event", event_id):
        for event in state.get("events") or [state.get("event") or {}]:
            if isinstance(event, dict) and event.get("id") == event_id:
                name = event.get("name")
    return await get_event(request, name if isinstance(name, str) else None)


async def invoke_function(request: web.Request) -> web.Response:
    """``POST /v1/functions/{fn_id}/invoke``, body ``{"data": {...}}``: start a run of the
    function with that data, as ``step.invoke`` would (its event is
    ``stepstream/function.invoked``). 202 ``{"run_id", "event_id"}`` once stored; 400 for
    a bad body, 404 for an unknown function."""
    from engine.api.http import CONFIG, INGEST, _no_function, _query, _read_body, error

    fn_id = request.match_info["fn_id"]
    body = await _read_body(request, request.app[CONFIG]["max_body_bytes"])
    if isinstance(body, web.Response):
        return body
    try:
        data = parse_invoke_body(body)
    except ValueError as exc:
        return error(400, str(exc))
    if await _query(request, "function", fn_id) is None:
        return _no_function(fn_id)
    ingest = request.app[INGEST]
    if not hasattr(ingest, "send_record"):
        return error(503, "this engine cannot store records")
    try:
        started = await start_invoke(ingest, fn_id, data)
    except IngestError as exc:
        return error(exc.status, exc.message)
    return web.json_response({**started, "function_id": fn_id}, status=202)


def history_from(ingest: Any) -> History | None:
    """A :class:`History` for an ingest that has broker settings, else None."""
    settings = getattr(ingest, "settings", None)
    if isinstance(settings, Settings) and settings.brokers:
        return History(settings)
    return None

