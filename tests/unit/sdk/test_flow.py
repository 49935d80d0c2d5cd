"""Flow-control options: what create_function accepts, what it refuses, what it
registers."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

import sdk
from topics.codec import decode, encode


def client() -> sdk.Client:
    return sdk.Client(app_id="shop", brokers="unused:9092")


async def noop(ctx: sdk.Context) -> None:
    return None


def flow_of(**options: Any) -> dict[str, Any] | None:
    f = client().create_function(fn_id="f", trigger=sdk.TriggerEvent(event="e"),
                                 **options)(noop)
    return f.config.registration(ts=1).flow


def test_exports() -> None:
    for name in ("Concurrency", "Throttle", "RateLimit", "Priority", "Singleton"):
        assert name in sdk.__all__ and hasattr(sdk, name), name


def test_registration_carries_every_option() -> None:
    c = client()

    @c.create_function(
        fn_id="summarize",
        trigger=sdk.TriggerEvent(event="ai/summary.requested"),
        concurrency=[sdk.Concurrency(limit=10, key="event.data.account_id"),
                     sdk.Concurrency(limit=60, mode="run")],
        throttle=sdk.Throttle(limit=1, period="5s", key="event.data.user_id", burst=2),
        rate_limit=sdk.RateLimit(limit=1, period=datetime.timedelta(hours=4),
                                 key="event.data.company_id"),
        priority=sdk.Priority(run="event.data.plan == 'enterprise' ? 120 : 0"),
        singleton=sdk.Singleton(key="event.data.user_id", mode="cancel"),
    )
    async def summarize(ctx: sdk.Context) -> None:
        return None

    reg = summarize.config.registration(ts=7)
    assert reg.flow == {
        "concurrency": [
            {"limit": 10, "key": "event.data.account_id", "scope": "fn", "mode": "step"},
            {"limit": 60, "key": None, "scope": "fn", "mode": "run"},
        ],
        "throttle": {"limit": 1, "period_ms": 5_000, "key": "event.data.user_id",
                     "burst": 2},
        "rate_limit": {"limit": 1, "period_ms": 4 * 3_600_000,
                       "key": "event.data.company_id"},
        "priority": {"run": "event.data.plan == 'enterprise' ? 120 : 0"},
        "singleton": {"key": "event.data.user_id", "mode": "cancel"},
    }
    assert decode(encode(reg)) == reg


def test_account_scope_is_env_scope() -> None:
    # One stepstream cluster is one account: "account" is "env".
    assert flow_of(concurrency=sdk.Concurrency(60, key='"openai"', scope="account")) == {
        "concurrency": [{"limit": 60, "key": '"openai"', "scope": "env", "mode": "step"}]}


def test_absent_options_are_omitted() -> None:
    assert flow_of() is None
    assert flow_of(priority=sdk.Priority()) is None
    assert flow_of(concurrency=[]) is None
    assert flow_of(concurrency=sdk.Concurrency(3)) == {
        "concurrency": [{"limit": 3, "key": None, "scope": "fn", "mode": "step"}]}
    assert flow_of(throttle=sdk.Throttle(2, 60_000, burst=None),
                   singleton=sdk.Singleton(mode="skip")) == {
        "throttle": {"limit": 2, "period_ms": 60_000, "key": None, "burst": 1},
        "singleton": {"key": None, "mode": "skip"}}


@pytest.mark.parametrize("option, period", [
    ("throttle", "1s"), ("throttle", "7d"), ("throttle", datetime.timedelta(seconds=1)),
    ("rate_limit", 1000), ("rate_limit", "24h"), ("rate_limit", "1h30m"),
])
def test_periods_at_the_bounds_are_accepted(option: str, period: Any) -> None:
    cls = sdk.Throttle if option == "throttle" else sdk.RateLimit
    flow = flow_of(**{option: cls(limit=1, period=period)})
    assert flow is not None and flow[option]["period_ms"] >= 1000


def test_the_failure_handler_gets_no_flow_control() -> None:
    f = client().create_function(fn_id="f", trigger=sdk.TriggerEvent(event="e"),
                                 concurrency=sdk.Concurrency(1), on_failure=noop)(noop)
    assert f.on_failure is not None
    assert f.on_failure.config.registration(ts=1).flow is None


BAD: list[tuple[dict[str, Any], str]] = [
    ({"concurrency": sdk.Concurrency(0)}, r"concurrency\.limit must be an int >= 1, got 0"),
    ({"concurrency": sdk.Concurrency(-2)}, r"concurrency\.limit must be an int >= 1"),
    ({"concurrency": sdk.Concurrency(True)}, r"concurrency\.limit must be an int >= 1"),
    ({"concurrency": sdk.Concurrency("5")},  # type: ignore[arg-type]
     r"concurrency\.limit must be an int >= 1"),
    ({"concurrency": [sdk.Concurrency(1), sdk.Concurrency(0, key="event.data.a")]},
     r"concurrency\[1\]\.limit"),
    ({"concurrency": [sdk.Concurrency(1, key=f"event.data.k{i}") for i in range(3)]},
     r"concurrency takes at most 2 limits, got 3"),
    ({"concurrency": sdk.Concurrency(5, scope="env")},
     r"concurrency\.key is required with scope='env'"),
    ({"concurrency": sdk.Concurrency(5, scope="account")},
     r"concurrency\.key is required with scope='account'"),
    ({"concurrency": sdk.Concurrency(5, key='"x"', scope="global")},  # type: ignore[arg-type]
     r"concurrency\.scope must be 'fn', 'env' or 'account', got 'global'"),
    ({"concurrency": sdk.Concurrency(5, mode="steps")},  # type: ignore[arg-type]
     r"concurrency\.mode must be 'step' or 'run', got 'steps'"),
    ({"concurrency": sdk.Concurrency(5, key="event.data.(")},
     r"concurrency\.key 'event.data.\(' does not parse as CEL"),
    ({"concurrency": sdk.Concurrency(5, key="")}, r"concurrency\.key '' is empty"),
    ({"concurrency": [sdk.Concurrency(1, key='"ai"', scope="env"),
                      sdk.Concurrency(9, key='"ai"', scope="account")]},
     r"concurrency\[0\] and concurrency\[1\] have the same scope and key"),
    ({"concurrency": [sdk.Concurrency(1), sdk.Concurrency(2, mode="run")]},
     r"concurrency\[0\] and concurrency\[1\] have the same scope and key \('fn', None\)"),
    ({"concurrency": 5}, r"concurrency must be sdk\.Concurrency or a list of them, got int"),
    ({"concurrency": [sdk.Concurrency(1, key='"ai"', scope="env"), sdk.Concurrency(3)]},
     r"concurrency with scope='env' cannot be combined with another concurrency limit"),
    ({"concurrency": sdk.Concurrency(1, key='"ai"', scope="env"),
      "throttle": sdk.Throttle(1, "1s")}, r"concurrency with scope='env' cannot be combined"),
    ({"concurrency": sdk.Concurrency(1, key='"ai"', scope="env"),
      "debounce": sdk.Debounce("1s")}, r"concurrency with scope='env' cannot be combined"),
    ({"concurrency": [5]}, r"concurrency\[0\] must be sdk\.Concurrency, got int"),
    ({"throttle": sdk.Throttle(0, "1s")}, r"throttle\.limit must be an int >= 1"),
    ({"throttle": sdk.Throttle(1, "999ms")},
     r"throttle\.period must be between 1s and 7d, got '999ms'"),
    ({"throttle": sdk.Throttle(1, "7d1s")}, r"throttle\.period must be between 1s and 7d"),
    ({"throttle": sdk.Throttle(1, 0)}, r"throttle\.period must be between 1s and 7d"),
    ({"throttle": sdk.Throttle(1, "soon")}, r"throttle\.period: cannot read duration"),
    ({"throttle": sdk.Throttle(1, 1.5)},  # type: ignore[arg-type]
     r"throttle\.period must be a duration .* got float"),
    ({"throttle": sdk.Throttle(1, -1000)}, r"throttle\.period: duration -1000 is negative"),
    ({"throttle": sdk.Throttle(1, "1s", burst=0)}, r"throttle\.burst must be an int >= 1"),
    ({"throttle": sdk.Throttle(1, "1s", key="event.")}, r"throttle\.key .* does not parse"),
    ({"rate_limit": sdk.RateLimit(0, "1h")}, r"rate_limit\.limit must be an int >= 1"),
    ({"rate_limit": sdk.RateLimit(1, "25h")},
     r"rate_limit\.period must be between 1s and 24h, got '25h'"),
    ({"rate_limit": sdk.RateLimit(1, 999)}, r"rate_limit\.period must be between 1s and 24h"),
    ({"rate_limit": sdk.RateLimit(1, "1h", key="a b")}, r"rate_limit\.key .* does not parse"),
    ({"priority": sdk.Priority(run="1 +")}, r"priority\.run '1 \+' does not parse as CEL"),
    ({"priority": sdk.Priority(run=120)},  # type: ignore[arg-type]
     r"priority\.run 120 must be a string, got int"),
    ({"singleton": sdk.Singleton()}, r"singleton\.mode must be 'skip' or 'cancel', got None"),
    ({"singleton": sdk.Singleton(mode="queue")},  # type: ignore[arg-type]
     r"singleton\.mode must be 'skip' or 'cancel', got 'queue'"),
    ({"singleton": sdk.Singleton(key="((", mode="skip")}, r"singleton\.key .* does not parse"),
    ({"throttle": sdk.RateLimit(1, "1s")},
     r"throttle must be sdk\.Throttle or None, got RateLimit"),
    ({"singleton": "skip"}, r"singleton must be sdk\.Singleton or None, got str"),
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


def test_flow_control_combines_with_idempotency_and_cancel() -> None:
    # Inngest refuses these combinations only with batching (test_batch_debounce.py);
    # idempotency, cancel rules, a singleton and a concurrency limit coexist.
    flow = flow_of(idempotency="event.data.id", cancel=[sdk.Cancel(event="stop")],
                   rate_limit=sdk.RateLimit(5, "1m"),
                   singleton=sdk.Singleton(mode="cancel"), concurrency=sdk.Concurrency(2))
    assert flow is not None and set(flow) == {"rate_limit", "singleton", "concurrency"}
