"""JSON events from any Kafka producer: held to the HTTP rules, defaults from the record."""

from __future__ import annotations

import json

import pytest

from engine.runtime.json_events import NotAnEvent, event_from_json, reason
from topics.codec import decode
from topics.settings import Settings

SETTINGS = Settings(max_event_bytes=1024)
AT = 1_780_000_000_000


def read(value: bytes | None, offset: int = 7, partition: int = 2) -> tuple:
    return event_from_json(value, topic="s.events", partition=partition, offset=offset,
                           record_ts_ms=AT, settings=SETTINGS)


def test_a_json_event_gets_an_id_and_ts_from_its_record_the_same_on_every_read() -> None:
    body = json.dumps({"name": "orders/created", "data": {"n": 1}}).encode()
    event, value = read(body)
    assert (event.name, event.data, event.ts) == ("orders/created", {"n": 1}, AT)
    assert read(body)[0].id == event.id  # a re-read: the same event, so the same runs
    assert read(body, offset=8)[0].id != event.id
    assert read(body, partition=3)[0].id != event.id
    assert decode(value) == event  # what stepstream's own clients would have written


def test_the_senders_id_and_ts_are_kept_and_inngest_extras_dropped() -> None:
    body = {"name": "a", "data": {}, "id": "evt-1", "ts": 5, "v": "1", "user": {"x": 1}}
    event, _ = read(json.dumps(body).encode())
    assert (event.id, event.ts) == ("evt-1", 5)


@pytest.mark.parametrize("value, fragment", [
    (None, "an empty record"),
    (b"", "an empty record"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "not a JSON object"),
    (b"{not json", "not valid JSON"),
    (b'{"data": {}}', "'name' is required"),
    (b'{"name": "a", "data": [1]}', "'data' must be a JSON object"),
    (b'{"name": "a", "extra": 1}', "unknown field(s) extra"),
    (b'{"name": "a", "ts": -1}', "'ts' must be an integer"),
    (json.dumps({"name": "a", "data": {"x": "y" * 2000}}).encode(), "over the 1024-byte"),
    (b'{"name": "a", "data": ' + b'{"a": ' * 5000 + b'1' + b'}' * 5001, "nested"),
])
def test_anything_else_is_refused_with_a_reason(value: bytes | None, fragment: str) -> None:
    with pytest.raises(NotAnEvent) as err:
        read(value)
    assert fragment in str(err.value)


def test_the_dead_letter_reason_says_what_is_accepted() -> None:
    text = reason(ValueError("not valid msgpack: ExtraData"), NotAnEvent("not valid JSON"))
    assert text.startswith("undecodable: not valid msgpack: ExtraData; not valid JSON.")
    assert '{"name": "...", "data": {...}' in text
