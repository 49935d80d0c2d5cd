"""Triggers on topics stepstream does not own: the SDK's declaration, the registry's
source table, and what a record becomes (no broker)."""

from __future__ import annotations

import json

import pytest

import sdk
from engine.runtime.json_events import NotAnEvent, source_event
from engine.runtime.router import Registry, SourceTopic, route
from topics.records import Event, FunctionRegistered
from topics.settings import Settings

SETTINGS = Settings(max_event_bytes=2048)


def test_trigger_topic_checks_its_fields_and_names_its_events() -> None:
    t = sdk.TriggerTopic(topic="orders")
    assert t.to_wire() == {"topic": "orders", "event": "kafka/orders", "expression": None,
                           "start": "earliest"}
    assert sdk.TriggerTopic(topic="o", event="shop/o", start="latest").event_name == "shop/o"
    for bad in ({"topic": "has space"}, {"topic": ""}, {"topic": "o", "event": "a/*"},
                {"topic": "o", "start": "middle"}, {"topic": "o", "expression": " "}):
        with pytest.raises(sdk.ConfigError):
            sdk.TriggerTopic(**bad)


def registered(fn_id: str, *triggers: dict) -> FunctionRegistered:
    return FunctionRegistered(fn_id=fn_id, app_id="a", name=fn_id, triggers=list(triggers),
                              retries=0, ts=0)


def test_the_registry_lists_source_topics_with_their_event_names_and_start() -> None:
    reg = Registry()
    reg.apply(registered("a-x", {"topic": "orders", "event": "kafka/orders",
                                 "expression": None, "start": "latest"}))
    assert reg.sources() == {"orders": SourceTopic(("kafka/orders",), "latest")}
    reg.apply(registered("a-y", {"topic": "orders", "event": "shop/order",
                                 "expression": None, "start": "earliest"},
                         {"event": "other"}))
    # Two names: each record becomes two events; any trigger asking for history gets it.
    assert reg.sources() == {"orders": SourceTopic(("kafka/orders", "shop/order"),
                                                   "earliest")}
    reg.remove("a-y")
    reg.remove("a-x")
    assert reg.sources() == {}


def read(value: bytes | None, offset: int = 4, names: tuple[str, ...] = ("kafka/o",)
         ) -> tuple[list[Event], dict]:
    return source_event(value, key=b"k-1", headers=[("h", b"v"), ("bin", b"\xff")],
                        topic="o", partition=1, offset=offset, record_ts_ms=1_000,
                        event_names=names, settings=SETTINGS)


def test_a_record_becomes_one_event_per_name_with_ids_from_its_place() -> None:
    events, source = read(json.dumps({"n": 1}).encode(), names=("kafka/o", "shop/o"))
    assert [(e.name, e.data, e.ts) for e in events] == [("kafka/o", {"n": 1}, 1_000),
                                                         ("shop/o", {"n": 1}, 1_000)]
    assert events[0].id != events[1].id
    assert read(json.dumps({"n": 1}).encode())[0][0].id == events[0].id  # read again
    assert read(json.dumps({"n": 1}).encode(), offset=5)[0][0].id != events[0].id
    assert source == {"topic": "o", "partition": 1, "offset": 4, "timestamp": 1_000,
                      "key": "k-1", "headers": {"h": "v", "bin": "\ufffd"}}
    [scalar], _ = read(b"42")
    assert scalar.data == {"value": 42}


@pytest.mark.parametrize("value, fragment", [
    (None, "tombstone"), (b"\xff", "not UTF-8"), (b"{oops", "not valid JSON"),
    (json.dumps({"x": "y" * 4000}).encode(), "over the 2048-byte limit"),
])
def test_records_that_are_no_event_say_why(value: bytes | None, fragment: str) -> None:
    with pytest.raises(NotAnEvent, match=fragment):
        read(value)


def test_the_source_rides_along_in_the_runs_event() -> None:
    reg = Registry()
    reg.apply(registered("a-x", {"topic": "o", "event": "kafka/o", "expression": None,
                                 "start": "earliest"}))
    events, source = read(b'{"n": 2}')
    [req] = route(events[0], reg, now_ms=5, backoff_base_ms=1, source=source)
    assert req.event["source"]["offset"] == 4 and req.event["data"] == {"n": 2}
    assert sdk.Event.from_wire(req.event).source == source
