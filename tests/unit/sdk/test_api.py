"""Client, functions, events, durations and settings of the SDK. No broker."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdk
from sdk._config import load_settings, resolve_brokers
from sdk._durations import datetime_ms, duration_ms, retry_at_ms
from sdk._events import to_record
from topics import records
from topics.codec import decode, encode
from topics.settings import DEV_BROKER_ADDRESS, DEV_BROKER_FILE, Settings


def test_exports() -> None:
    for name in ("Client", "Event", "TriggerEvent", "Context", "Step", "NonRetriableError",
                 "RetryAfterError", "StepError", "Function", "SendError"):
        assert hasattr(sdk, name), name


def test_create_function_config_and_registration() -> None:
    client = sdk.Client(app_id="shop", brokers="b:9092")

    @client.create_function(
        fn_id="process-order",
        trigger=[sdk.TriggerEvent(event="shop/order.*", expression="event.data.total > 0"),
                 sdk.TriggerEvent(event="shop/retry")],
        retries=3,
    )
    async def process_order(ctx: sdk.Context) -> dict[str, Any]:
        """Docstring kept."""
        return {}

    assert isinstance(process_order, sdk.Function)
    assert (process_order.id, process_order.fn_id, process_order.name) == (
        "shop-process-order", "process-order", "process-order")
    assert process_order.__doc__ == "Docstring kept."
    assert process_order.__name__ == "process_order"
    assert process_order.config.retries == 3
    assert client.functions == [process_order]
    assert client.get_function("shop-process-order") is process_order
    assert client.get_function("process-order") is process_order
    assert client.get_function("shop-other") is None

    reg = process_order.config.registration(ts=42)
    assert reg == records.FunctionRegistered(
        fn_id="shop-process-order", app_id="shop", name="process-order",
        triggers=[{"event": "shop/order.*", "expression": "event.data.total > 0"},
                  {"event": "shop/retry", "expression": None}],
        retries=3, ts=42,
    )
    assert decode(encode(reg)) == reg


def test_default_retries_and_name() -> None:
    client = sdk.Client(app_id="a", brokers="b")

    @client.create_function(fn_id="f", trigger=sdk.TriggerEvent(event="e"), name="Nice name")
    async def f(ctx: sdk.Context) -> None:
        return None

    assert f.config.retries == 4
    assert f.name == "Nice name"


@pytest.mark.parametrize("kwargs", [
    {"fn_id": "", "trigger": sdk.TriggerEvent(event="e")},
    {"fn_id": "f", "trigger": []},
    {"fn_id": "f", "trigger": sdk.TriggerEvent(event="e"), "retries": -1},
    {"fn_id": "f", "trigger": sdk.TriggerEvent(event="e"), "retries": True},
    {"fn_id": "f", "trigger": ["e"]},
])
def test_create_function_rejects_bad_config(kwargs: dict[str, Any]) -> None:
    client = sdk.Client(app_id="a", brokers="b")
    with pytest.raises(sdk.ConfigError):
        client.create_function(**kwargs)


def test_duplicate_and_generator_functions_are_rejected() -> None:
    client = sdk.Client(app_id="a", brokers="b")
    trigger = sdk.TriggerEvent(event="e")

    @client.create_function(fn_id="f", trigger=trigger)
    async def f(ctx: sdk.Context) -> None:
        return None

    with pytest.raises(sdk.ConfigError, match="already"):
        client.create_function(fn_id="f", trigger=trigger)
    with pytest.raises(sdk.ConfigError, match="not callable"):
        client.create_function(fn_id="g", trigger=trigger)(5)  # type: ignore[arg-type]
    assert client.create_function(fn_id="h", trigger=trigger)(lambda ctx: None).is_sync


def test_trigger_validation() -> None:
    with pytest.raises(sdk.ConfigError):
        sdk.TriggerEvent(event="")
    with pytest.raises(sdk.ConfigError):
        sdk.TriggerEvent(event="e", expression="  ")


# -- events --------------------------------------------------------------------------

SETTINGS = Settings(brokers="b", max_event_bytes=100)


def test_to_record_fills_id_and_ts() -> None:
    r = to_record(sdk.Event(name="n", data={"a": 1}), default_id="ID", now_ms=7,
                  settings=SETTINGS)
    assert r == records.Event(name="n", data={"a": 1}, id="ID", ts=7)
    r = to_record(sdk.Event(name="n", id="mine", ts=3), default_id="ID", now_ms=7,
                  settings=SETTINGS)
    assert (r.id, r.ts) == ("mine", 3)


@pytest.mark.parametrize(("event", "match"), [
    (sdk.Event(name=""), "name"),
    (sdk.Event(name="n", data=[1]), "dict"),  # type: ignore[arg-type]
    (sdk.Event(name="n", data={"x": object()}), "not JSON"),
    (sdk.Event(name="n", data={"x": "y" * 200}), r"too large.*100-byte limit"),
    (sdk.Event(name="n", ts=True), "ts"),
])
def test_to_record_rejects_bad_events(event: sdk.Event, match: str) -> None:
    with pytest.raises(sdk.EventError, match=match):
        to_record(event, default_id="ID", now_ms=7, settings=SETTINGS)


def test_send_rejects_bad_event_before_touching_a_broker() -> None:
    client = sdk.Client(app_id="a", brokers="127.0.0.1:1")
    with pytest.raises(sdk.EventError):
        client.send_sync([sdk.Event(name="ok"), sdk.Event(name="")])
    with pytest.raises(sdk.EventError):
        client.send_sync("not an event")  # type: ignore[arg-type]
    assert client._producer is None


def test_event_from_wire_is_lenient() -> None:
    assert sdk.Event.from_wire({"name": "n", "data": {"a": 1}, "id": "i", "ts": 5}) == sdk.Event(
        "n", {"a": 1}, "i", 5)
    assert sdk.Event.from_wire({"name": "n"}) == sdk.Event("n", {})
    assert sdk.Event.from_wire(None) == sdk.Event("", {})


# -- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ms"), [
    ("2s", 2000), ("500ms", 500), ("1h", 3_600_000), ("1d", 86_400_000), ("1w", 604_800_000),
    ("1h30m", 5_400_000), ("1.5s", 1500), (" 2S ", 2000), (250, 250),
    (datetime.timedelta(milliseconds=1500), 1500),
])
def test_duration_ms(value: Any, ms: int) -> None:
    assert duration_ms(value) == ms


@pytest.mark.parametrize("value", ["", "2", "s", "2 years", "-1s", "1s-", -1])
def test_duration_ms_rejects(value: Any) -> None:
    with pytest.raises(ValueError):
        duration_ms(value)


@pytest.mark.parametrize("value", [True, 1.5, None, [1]])
def test_duration_ms_rejects_types(value: Any) -> None:
    with pytest.raises(TypeError):
        duration_ms(value)


@given(st.integers(min_value=0, max_value=10**12))
def test_duration_ms_of_int_and_timedelta_agree(ms: int) -> None:
    assert duration_ms(ms) == duration_ms(datetime.timedelta(milliseconds=ms)) == ms


def test_datetime_ms() -> None:
    assert datetime_ms(datetime.datetime(1970, 1, 1, 0, 0, 1)) == 1000
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    assert datetime_ms(datetime.datetime(1970, 1, 1, 2, 0, 1, tzinfo=plus2)) == 1000
    assert datetime_ms("1970-01-01T00:00:01+00:00") == 1000
    assert retry_at_ms(datetime.datetime(1970, 1, 1, 0, 0, 2), now_ms=99) == 2000
    assert retry_at_ms(datetime.timedelta(seconds=1), now_ms=99) == 1099
    assert retry_at_ms(5, now_ms=99) == 104


def test_retry_after_error_checks_its_argument() -> None:
    with pytest.raises(TypeError):
        sdk.RetryAfterError("x", "soon")  # type: ignore[arg-type]


# -- brokers and settings ------------------------------------------------------------


def test_brokers_resolution_order(tmp_path: Path) -> None:
    env = {"STEPSTREAM_BROKERS": "a:1", "KAFKA_BOOTSTRAP_SERVERS": "k:1"}
    assert resolve_brokers("arg:1", env, tmp_path) == "arg:1"
    assert resolve_brokers(None, env, tmp_path) == "a:1"
    assert resolve_brokers(None, {"KAFKA_BOOTSTRAP_SERVERS": "k:1"}, tmp_path) == "k:1"
    assert resolve_brokers(None, {}, tmp_path) == DEV_BROKER_ADDRESS
    dev_file = tmp_path / DEV_BROKER_FILE
    dev_file.parent.mkdir(parents=True)
    dev_file.write_text("127.0.0.1:5555\n")
    assert resolve_brokers(None, {}, tmp_path) == "127.0.0.1:5555"
    assert resolve_brokers(None, {"KAFKA_BOOTSTRAP_SERVERS": "k:1"}, tmp_path) == "k:1"


def test_load_settings_reads_env(tmp_path: Path) -> None:
    s = load_settings(None, {"STEPSTREAM_PREFIX": "t.", "STEPSTREAM_PARTITIONS": "3"}, tmp_path)
    assert (s.prefix, s.partitions, s.brokers) == ("t.", 3, DEV_BROKER_ADDRESS)


def test_client_resolves_brokers_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEPSTREAM_BROKERS", raising=False)
    client = sdk.Client(app_id="a")
    monkeypatch.setenv("STEPSTREAM_BROKERS", "late:1")
    assert client.settings.brokers == "late:1"
    explicit = sdk.Client(app_id="a", settings=Settings(prefix="p."), brokers="x:1")
    assert (explicit.settings.brokers, explicit.settings.prefix) == ("x:1", "p.")
