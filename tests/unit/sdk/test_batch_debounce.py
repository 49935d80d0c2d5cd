"""Batching and debounce options: what create_function accepts, what it refuses (bounds,
CEL, types, the combinations Inngest forbids), what it registers, and what a batch
run's handler sees."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

import sdk
from sdk._execution import execute
from topics import records
from topics.codec import decode, encode
from topics.settings import Settings


def client() -> sdk.Client:
    return sdk.Client(app_id="shop", brokers="unused:9092")


async def noop(ctx: sdk.Context) -> None:
    return None


def flow_of(**options: Any) -> dict[str, Any] | None:
    f = client().create_function(fn_id="f", trigger=sdk.TriggerEvent(event="e"),
                                 **options)(noop)
    return f.config.registration(ts=1).flow


def test_exports() -> None:
    for name in ("Batch", "Debounce"):
        assert name in sdk.__all__ and hasattr(sdk, name), name


def test_batch_wire_shape_and_round_trip() -> None:
    c = client()

    @c.create_function(
        fn_id="record-api-calls", trigger=sdk.TriggerEvent(event="log/api.call"),
        batch_events=sdk.Batch(max_size=100, timeout=datetime.timedelta(seconds=5),
                               key="event.data.user_id",
                               if_exp='event.data.account_type == "free"'),
        concurrency=sdk.Concurrency(limit=1),
        throttle=sdk.Throttle(limit=10, period="1m"),
    )
    async def record(ctx: sdk.Context) -> None:
        return None

    reg = record.config.registration(ts=3)
    assert reg.flow == {
        "concurrency": [{"limit": 1, "key": None, "scope": "fn", "mode": "step"}],
        "throttle": {"limit": 10, "period_ms": 60_000, "key": None, "burst": 1},
        "batch": {"max_size": 100, "timeout_ms": 5_000, "key": "event.data.user_id",
                  "if_exp": 'event.data.account_type == "free"'},
    }
    assert decode(encode(reg)) == reg


def test_debounce_wire_shape_and_round_trip() -> None:
    c = client()

    @c.create_function(
        fn_id="sync-company", trigger=sdk.TriggerEvent(event="intercom/company.updated"),
        debounce=sdk.Debounce(period="5m", key="event.data.account_id", timeout="10m",
                              collect=True),
        idempotency="event.data.account_id",
        singleton=sdk.Singleton(mode="skip"),
    )
    async def sync(ctx: sdk.Context) -> None:
        return None

    reg = sync.config.registration(ts=4)
    assert reg.flow == {
        "singleton": {"key": None, "mode": "skip"},
        "debounce": {"period_ms": 300_000, "key": "event.data.account_id",
                     "timeout_ms": 600_000, "collect": True},
    }
    assert reg.idempotency == "event.data.account_id"
    assert decode(encode(reg)) == reg


def test_defaults_on_the_wire() -> None:
    assert flow_of(batch_events=sdk.Batch(2, 1000)) == {
        "batch": {"max_size": 2, "timeout_ms": 1000, "key": None, "if_exp": None}}
    assert flow_of(debounce=sdk.Debounce(period=1000)) == {
        "debounce": {"period_ms": 1000, "key": None, "timeout_ms": None, "collect": False}}


@pytest.mark.parametrize("option", [
    sdk.Batch(2, "1s"), sdk.Batch(100, "60s"), sdk.Batch(50, "1m"),
    sdk.Batch(3, datetime.timedelta(seconds=1)),
    sdk.Debounce("1s"), sdk.Debounce("7d"), sdk.Debounce(1000, timeout="7d"),
    sdk.Debounce(datetime.timedelta(days=7), timeout=datetime.timedelta(seconds=1)),
])
def test_bounds_are_inclusive(option: Any) -> None:
    name = "batch_events" if isinstance(option, sdk.Batch) else "debounce"
    assert flow_of(**{name: option}) is not None


def test_the_failure_handler_gets_no_batching() -> None:
    f = client().create_function(fn_id="f", trigger=sdk.TriggerEvent(event="e"),
                                 batch_events=sdk.Batch(10, "5s"), on_failure=noop)(noop)
    assert f.on_failure is not None
    assert f.on_failure.config.registration(ts=1).flow is None


BAD: list[tuple[dict[str, Any], str]] = [
    # bounds and types of Batch
    ({"batch_events": sdk.Batch(1, "5s")},
     r"batch_events\.max_size must be an int from 2 to 100, got 1"),
    ({"batch_events": sdk.Batch(0, "5s")}, r"batch_events\.max_size must be an int"),
    ({"batch_events": sdk.Batch(101, "5s")},
     r"batch_events\.max_size must be an int from 2 to 100, got 101"),
    ({"batch_events": sdk.Batch(True, "5s")}, r"batch_events\.max_size must be an int"),
    ({"batch_events": sdk.Batch("10", "5s")},  # type: ignore[arg-type]
     r"batch_events\.max_size must be an int from 2 to 100, got '10'"),
    ({"batch_events": sdk.Batch(10, "999ms")},
     r"batch_events\.timeout must be between 1s and 60s, got '999ms'"),
    ({"batch_events": sdk.Batch(10, "61s")},
     r"batch_events\.timeout must be between 1s and 60s, got '61s'"),
    ({"batch_events": sdk.Batch(10, datetime.timedelta(minutes=2))},
     r"batch_events\.timeout must be between 1s and 60s"),
    ({"batch_events": sdk.Batch(10, 0)}, r"batch_events\.timeout must be between 1s and 60s"),
    ({"batch_events": sdk.Batch(10, None)},  # type: ignore[arg-type]
     r"batch_events\.timeout must be a duration .* got NoneType"),
    ({"batch_events": sdk.Batch(10, 5.0)},  # type: ignore[arg-type]
     r"batch_events\.timeout must be a duration .* got float"),
    ({"batch_events": sdk.Batch(10, "soon")}, r"batch_events\.timeout: cannot read duration"),
    ({"batch_events": sdk.Batch(10, "5s", key="event.data.(")},
     r"batch_events\.key 'event.data.\(' does not parse as CEL"),
    ({"batch_events": sdk.Batch(10, "5s", key="")}, r"batch_events\.key '' is empty"),
    ({"batch_events": sdk.Batch(10, "5s", if_exp="event.data.free ==")},
     r"batch_events\.if_exp 'event.data.free ==' does not parse as CEL"),
    ({"batch_events": sdk.Batch(10, "5s", if_exp=True)},  # type: ignore[arg-type]
     r"batch_events\.if_exp True must be a string, got bool"),
    ({"batch_events": {"max_size": 10, "timeout": "5s"}},
     r"batch_events must be sdk\.Batch or None, got dict"),
    ({"batch_events": sdk.Debounce("5s")},
     r"batch_events must be sdk\.Batch or None, got Debounce"),
    # bounds and types of Debounce
    ({"debounce": sdk.Debounce("999ms")},
     r"debounce\.period must be between 1s and 7d, got '999ms'"),
    ({"debounce": sdk.Debounce("7d1s")}, r"debounce\.period must be between 1s and 7d"),
    ({"debounce": sdk.Debounce(0)}, r"debounce\.period must be between 1s and 7d, got 0"),
    ({"debounce": sdk.Debounce(-1000)}, r"debounce\.period: duration -1000 is negative"),
    ({"debounce": sdk.Debounce(1.5)},  # type: ignore[arg-type]
     r"debounce\.period must be a duration .* got float"),
    ({"debounce": sdk.Debounce("5s", timeout="500ms")},
     r"debounce\.timeout must be between 1s and 7d, got '500ms'"),
    ({"debounce": sdk.Debounce("5s", timeout="8d")},
     r"debounce\.timeout must be between 1s and 7d, got '8d'"),
    ({"debounce": sdk.Debounce("5s", timeout="later")},
     r"debounce\.timeout: cannot read duration"),
    ({"debounce": sdk.Debounce("5s", key="a b")}, r"debounce\.key 'a b' does not parse"),
    ({"debounce": sdk.Debounce("5s", key=7)},  # type: ignore[arg-type]
     r"debounce\.key 7 must be a string, got int"),
    ({"debounce": sdk.Debounce("5s", collect="yes")},  # type: ignore[arg-type]
     r"debounce\.collect must be True or False, got 'yes'"),
    ({"debounce": sdk.Debounce("5s", collect=1)},  # type: ignore[arg-type]
     r"debounce\.collect must be True or False, got 1"),
    ({"debounce": "5s"}, r"debounce must be sdk\.Debounce or None, got str"),
    # what Inngest forbids with batching
    ({"batch_events": sdk.Batch(10, "5s"), "idempotency": "event.data.id"},
     r"batch_events cannot be combined with idempotency \("),
    ({"batch_events": sdk.Batch(10, "5s"), "rate_limit": sdk.RateLimit(1, "1h")},
     r"batch_events cannot be combined with rate_limit \("),
    ({"batch_events": sdk.Batch(10, "5s"), "cancel": [sdk.Cancel(event="stop")]},
     r"batch_events cannot be combined with cancel \("),
    ({"batch_events": sdk.Batch(10, "5s"), "cancel": sdk.Cancel(event="stop")},
     r"batch_events cannot be combined with cancel \("),
    ({"batch_events": sdk.Batch(10, "5s"), "priority": sdk.Priority(run="120")},
     r"batch_events cannot be combined with priority \("),
    ({"batch_events": sdk.Batch(10, "5s"), "debounce": sdk.Debounce("5s")},
     r"batch_events cannot be combined with debounce \("),
    ({"batch_events": sdk.Batch(10, "5s"), "singleton": sdk.Singleton(mode="skip")},
     r"batch_events cannot be combined with singleton \("),
    ({"batch_events": sdk.Batch(10, "5s"), "idempotency": "event.data.id",
      "singleton": sdk.Singleton(mode="cancel"), "debounce": sdk.Debounce("1s")},
     r"batch_events cannot be combined with idempotency, debounce, singleton \("),
    # an option's own problem is named before the combination
    ({"batch_events": sdk.Batch(10, "5s"), "debounce": sdk.Debounce("0s")},
     r"debounce\.period must be between 1s and 7d"),
]


@pytest.mark.parametrize("options, message", BAD, ids=[m for _, m in BAD])
def test_bad_options_are_refused_when_the_function_is_declared(
        options: dict[str, Any], message: str) -> None:
    c = client()
    with pytest.raises(sdk.ConfigError, match=r"^function 'charge': " + message):
        c.create_function(fn_id="charge", trigger=sdk.TriggerEvent(event="e"), **options)
    # Refused before anything is declared: the id is still free.
    assert c.functions == []
    c.create_function(fn_id="charge", trigger=sdk.TriggerEvent(event="e"))(noop)


def test_batching_combines_with_concurrency_and_throttle() -> None:
    flow = flow_of(batch_events=sdk.Batch(10, "5s", key="event.data.user_id"),
                   concurrency=[sdk.Concurrency(1, key="event.data.user_id"),
                                sdk.Concurrency(5, mode="run")],
                   throttle=sdk.Throttle(2, "1s", key="event.data.user_id"),
                   priority=sdk.Priority())  # no expression: no priority, no conflict
    assert flow is not None and set(flow) == {"batch", "concurrency", "throttle"}


def test_debounce_combines_with_idempotency_singleton_and_the_rest() -> None:
    # Inngest forbids debounce only with batching.
    flow = flow_of(debounce=sdk.Debounce("10s", key="event.data.doc"),
                   idempotency="event.data.doc", singleton=sdk.Singleton(mode="cancel"),
                   cancel=[sdk.Cancel(event="doc/deleted", match="data.doc")],
                   rate_limit=sdk.RateLimit(5, "1m"), throttle=sdk.Throttle(1, "1s"),
                   priority=sdk.Priority(run="0"), concurrency=sdk.Concurrency(2))
    assert flow is not None and set(flow) == {
        "debounce", "singleton", "rate_limit", "throttle", "priority", "concurrency"}


# -- what a batch run's handler sees --------------------------------------------------


def _event(i: int) -> dict[str, Any]:
    return {"name": "log/api.call", "data": {"i": i}, "id": f"01HGW1J8Z6Y5Q4B3C2D1E0F9G{i}",
            "ts": 1_700_000_000_000 + i}


def _seen(event: dict[str, Any], events: list[dict[str, Any]]) -> Any:
    c = client()

    @c.create_function(fn_id="bulk", trigger=sdk.TriggerEvent(event="log/*"),
                       batch_events=sdk.Batch(10, "5s"))
    async def bulk(ctx: sdk.Context) -> Any:
        return {"event": ctx.event.id, "events": [e.id for e in ctx.events],
                "data": [e.data["i"] for e in ctx.events]}

    task = records.Task(run_id="R", fn_id=bulk.id, app_id="shop", seq=1,
                        partition_key="R", event=event, events=events, attempt=0,
                        steps={}, step_attempts={}, ts=1_700_000_000_100)
    result = asyncio.run(execute(bulk, task, settings=Settings(brokers="unused:9092"),
                                 now_ms=lambda: 1_700_000_000_100))
    (outcome,) = result.outcomes
    assert outcome.op == records.FUNCTION_COMPLETED
    return outcome.output


def test_a_batch_run_sees_every_event_in_order_and_the_first_as_event() -> None:
    batch = [_event(i) for i in (3, 1, 2)]  # accepted order, not id order
    assert _seen(batch[0], batch) == {"event": batch[0]["id"],
                                      "events": [e["id"] for e in batch], "data": [3, 1, 2]}


def test_a_collecting_debounce_run_sees_the_last_event_as_event() -> None:
    # The engine sends the debounce's last event as the task's event; ctx.event is it.
    window = [_event(i) for i in range(4)]
    assert _seen(window[-1], window)["event"] == window[-1]["id"]


def test_a_run_without_a_batch_sees_its_event_alone() -> None:
    one = _event(5)
    assert _seen(one, []) == {"event": one["id"], "events": [one["id"]], "data": [5]}
