"""The wire codec: round trips and every decode limit."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from topics.codec import DecodeError, PayloadError, check_payload, decode, encode
from topics.records import (
    DeadLetter,
    Event,
    FunctionRegistered,
    Outcome,
    OutcomesReported,
    RunRequested,
    Task,
    TimerFired,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)

SAMPLES = [
    Event(name="a/b", data={"x": [1, 2.5, None]}, id="E", ts=1),
    FunctionRegistered(fn_id="app-f", app_id="app", name="f",
                       triggers=[{"event": "a/*", "expression": None}], retries=4, ts=1),
    FunctionRegistered(fn_id="app-g", app_id="app", name="g", triggers=[{"cron": "@daily"}],
                       retries=0, ts=2, flow={
                           "concurrency": [{"limit": 2, "key": "event.data.a", "scope": "fn",
                                            "mode": "step"}],
                           "throttle": {"limit": 1, "period_ms": 1000, "key": None,
                                        "burst": 1},
                           "singleton": {"key": None, "mode": "skip"}}),
    FunctionRegistered(fn_id="app-b", app_id="app", name="b",
                       triggers=[{"event": "log/*", "expression": None}], retries=4, ts=3,
                       flow={"batch": {"max_size": 100, "timeout_ms": 5000,
                                       "key": "event.data.user_id", "if_exp": None}}),
    FunctionRegistered(fn_id="app-d", app_id="app", name="d",
                       triggers=[{"event": "doc/*", "expression": None}], retries=4, ts=4,
                       idempotency="event.data.doc",
                       flow={"debounce": {"period_ms": 300_000, "key": "event.data.doc",
                                          "timeout_ms": None, "collect": True}}),
    RunRequested(run_id="R", fn_id="f", app_id="a", partition_key="R", event={}, events=[],
                 retries=4, backoff_base_ms=1000, ts=1),
    OutcomesReported(run_id="R", task_seq=3, worker="w", ts=2, outcomes=[
        Outcome(op="step.completed", step_id="s", output={"k": "v"}),
        Outcome(op="step.failed", step_id="t", error={"name": "E", "message": "m"},
                retriable=False, retry_after_ms=5)]),
    TimerFired(run_id="R", timer_id="sleep:1", due_ms=10, ts=11),
    Task(run_id="R", fn_id="f", app_id="a", seq=1, partition_key="R", event={}, events=[],
         attempt=0, steps={"s": {"data": 1}}, step_attempts={}, ts=1),
    DeadLetter(source_topic="t", partition=0, offset=1, key=b"k", value=b"\xc1", reason="r",
               ts=1),
]


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: r.KIND)
def test_round_trip(record: object) -> None:
    assert decode(encode(record)) == record  # type: ignore[arg-type]


def test_a_registration_written_before_flow_control_decodes_without_it() -> None:
    body = {"k": "function.registered", "v": 1, "fn_id": "app-f", "app_id": "app",
            "name": "f", "triggers": [{"event": "e", "expression": None}], "retries": 4,
            "ts": 1, "cancel": [], "timeouts": None, "idempotency": None}
    record = decode(msgpack.packb(body))
    assert isinstance(record, FunctionRegistered) and record.flow is None


@given(json_values)
def test_event_data_round_trips(value: object) -> None:
    ev = Event(name="n", data={"v": value}, id="i", ts=0)
    assert decode(encode(ev)) == ev


@pytest.mark.parametrize("raw, reason", [
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb([1, 2]), "must be a map"),
    (msgpack.packb({"k": "nope", "v": 1}), "unknown record kind"),
    (msgpack.packb({"k": "timer.fired", "v": 99, "run_id": "r", "timer_id": "t",
                    "due_ms": 1, "ts": 1}), "unsupported version"),
    (msgpack.packb({"k": "timer.fired", "v": 1, "run_id": "r"}), "missing field"),
    (msgpack.packb({"k": "timer.fired", "v": 1, "run_id": "r", "timer_id": "t", "due_ms": 1,
                    "ts": 1, "extra": 1}), "unknown field"),
    (msgpack.packb({"k": "event", "v": 1, "name": "n", "id": "i", "ts": 1,
                    "data": {1: "int key"}}), "not allowed for map key"),
    (msgpack.packb({"k": "event", "v": 1, "name": "n", "id": "i", "ts": 1,
                    "data": {b"bytes key": 1}}), "not a string"),
    (msgpack.packb({"k": "event", "v": 1, "name": "n", "id": "i", "ts": 1,
                    "data": msgpack.ExtType(5, b"x")}), "ext type"),
    (None, "no value"),
])
def test_bad_input_is_rejected_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(raw)


def test_depth_and_size_limits() -> None:
    deep: object = 1
    for _ in range(100):
        deep = [deep]
    with pytest.raises(DecodeError, match="nesting deeper"):
        decode(encode(Event(name="n", data={"d": deep}, id="i", ts=0)), max_depth=64)
    with pytest.raises(DecodeError, match="over the 10-byte limit"):
        decode(encode(SAMPLES[0]), max_bytes=10)


def test_wrong_topic_kind_is_rejected() -> None:
    with pytest.raises(DecodeError, match="does not belong"):
        decode(encode(SAMPLES[0]), expect=(Task,))


@pytest.mark.parametrize("value, fragment", [
    ({1, 2}, "type set is not JSON-serializable"),
    ({"a": object()}, ".a: a value of type object"),
    ({1: "x"}, "key 1 is not a string"),
    (math.nan, "not a finite number"),
    (b"raw", "type bytes"),
    (2**70, "does not fit in 64 bits"),
])
def test_check_payload_names_the_problem(value: object, fragment: str) -> None:
    with pytest.raises(PayloadError, match="step 'x' output") as err:
        check_payload(value, what="step 'x' output")
    assert fragment in str(err.value)


def test_check_payload_size_limit() -> None:
    with pytest.raises(PayloadError, match="over the 100-byte limit"):
        check_payload({"d": "x" * 200}, what="event data", max_bytes=100)
    assert check_payload({"d": "x"}, what="event data", max_bytes=100) > 0


@pytest.mark.parametrize("max_depth", [2, 3, 5, 64])
def test_depth_limit_is_exact(max_depth: int) -> None:
    # The record map is level 1; ``data`` holds the rest, alternating maps and lists.
    def nested(levels: int) -> object:
        value: object = 1
        for i in range(levels):
            value = [value] if i % 2 else {"x": value}
        return value

    fits = encode(Event(name="n", data=nested(max_depth - 1), id="i", ts=0))  # type: ignore[arg-type]
    assert decode(fits, max_depth=max_depth).data == nested(max_depth - 1)
    too_deep = encode(Event(name="n", data=nested(max_depth), id="i", ts=0))  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="nesting deeper"):
        decode(too_deep, max_depth=max_depth)


def test_bytes_key_anywhere_is_rejected() -> None:
    # A bin marker in the bytes always sends the record through the full check.
    raw = msgpack.packb({"k": "event", "v": 1, "name": "n", "id": "i", "ts": 1,
                         "data": {"l": [{"ok": 1}, {b"k": 2}]}}, use_bin_type=True)
    with pytest.raises(DecodeError, match="not a string"):
        decode(raw)


def test_bytes_values_still_decode() -> None:
    # Bin markers and marker-like bytes in integers take the full check, and pass it.
    dl = DeadLetter(source_topic="t", partition=0, offset=0x9F9F9F9F9F, key=b"\xc4\x90",
                    value=b"\x80" * 70, reason="r", ts=0xDCDDDEDF)
    assert decode(encode(dl)) == dl
