"""Events written to the ``events`` topic by any Kafka producer, as JSON.

stepstream's own clients write msgpack records; kcat, a Java or Go producer, or Kafka
Connect can write a UTF-8 JSON value ``{"name": ..., "data": {...}, "id"?, "ts"?}``
instead. It is held to exactly the rules of ``POST /e/{key}`` (engine/events.py). What it
leaves out is filled in from the record itself, so reading the same record again (after
a crash, a rebalance, a replay) gives the same event and so the same runs:

* ``id``: a ULID derived from topic, partition and offset, at the record's timestamp;
* ``ts``: the record's timestamp (CreateTime as the producer set it, or the broker's
  LogAppendTime).
"""

from __future__ import annotations

import json
from typing import Any

from engine.events import IngestError, prepare_event
from topics.ids import derived_ulid
from topics.records import Event
from topics.settings import Settings

ACCEPTED = ('stepstream\'s own msgpack event records, or a UTF-8 JSON object '
            '{"name": "...", "data": {...}, "id"?: "...", "ts"?: epoch ms}')


class NotAnEvent(ValueError):
    """A record that is neither kind of event; ``str()`` is the dead letter's reason."""


def _loads(value: bytes) -> Any:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotAnEvent(f"not UTF-8 JSON either ({exc})") from None
    if not text.lstrip().startswith("{"):
        raise NotAnEvent("not a JSON object either")
    try:
        return json.loads(text)
    except RecursionError:
        raise NotAnEvent("JSON nested too deeply") from None
    except ValueError as exc:
        raise NotAnEvent(f"not valid JSON either ({exc})") from None


def event_from_json(value: bytes | None, *, topic: str, partition: int, offset: int,
                    record_ts_ms: int, settings: Settings) -> tuple[Event, bytes]:
    """The event in a JSON record and its msgpack encoding (what stepstream's own
    clients would have written). Raises :class:`NotAnEvent` with the reason."""
    if not value:
        raise NotAnEvent("an empty record")
    raw = _loads(value)
    if not isinstance(raw, dict):
        raise NotAnEvent("not a JSON object either")
    ts = raw.get("ts")
    at = ts if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0 else (
        max(record_ts_ms, 0))
    if "ts" not in raw or raw["ts"] is None:
        raw = {**raw, "ts": at}

    def derived_id() -> str:
        return derived_ulid(at, "kafka", topic, str(partition), str(offset))
    try:
        return prepare_event(raw, settings, now=at, default_id=derived_id)
    except IngestError as exc:
        raise NotAnEvent(f"a JSON event that is refused: "
                         f"{exc.message.removeprefix('event 0 ')}") from None


def reason(msgpack_error: Exception, json_error: NotAnEvent) -> str:
    """A dead letter's reason for a record that is neither: what each reading found, and
    the formats accepted."""
    return f"undecodable: {msgpack_error}; {json_error}. Accepted: {ACCEPTED}"


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", errors="replace")


def source_event(value: bytes | None, *, key: bytes | str | None,
                 headers: Any, topic: str, partition: int,
                 offset: int, record_ts_ms: int, event_names: tuple[str, ...],
                 settings: Settings) -> tuple[list[Event], dict[str, Any]]:
    """The events a record of a source topic (``sdk.TriggerTopic``) becomes, one per
    name, and where it came from (``ctx.event.source``). The JSON value is the data (a
    value that is not an object is ``{"value": ...}``); each id derives from topic,
    partition, offset and name, so a record read again gives the same events. Raises
    :class:`NotAnEvent` for a value that is not UTF-8 JSON or breaks the event limits."""
    if value is None:
        raise NotAnEvent("a tombstone (no value)")
    try:
        parsed = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise NotAnEvent(f"not UTF-8 JSON ({exc})") from None
    except RecursionError:
        raise NotAnEvent("JSON nested too deeply") from None
    except ValueError as exc:
        raise NotAnEvent(f"not valid JSON ({exc})") from None
    data = parsed if isinstance(parsed, dict) else {"value": parsed}
    at = max(record_ts_ms, 0)
    source = {"topic": topic, "partition": partition, "offset": offset, "timestamp": at,
              "key": _text(key),
              "headers": {str(k): _text(v) for k, v in
                          (headers.items() if isinstance(headers, dict) else headers or [])}}
    events = []
    for name in event_names:
        raw = {"name": name, "data": data, "ts": at,
               "id": derived_ulid(at, "source", topic, str(partition), str(offset), name)}
        try:
            events.append(prepare_event(raw, settings, now=at)[0])
        except IngestError as exc:
            raise NotAnEvent(f"refused as an event: {exc.message.removeprefix('event 0 ')}"
                             ) from None
    return events, source
