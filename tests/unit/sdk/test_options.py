"""create_function's options: cron triggers, cancel, timeouts, idempotency, on_failure."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import sdk
from sdk._expressions import cel_problem, match_path
from tests.unit.sdk.test_execution import NOW
from topics import records
from topics.codec import decode, encode


def client() -> sdk.Client:
    return sdk.Client(app_id="shop", brokers="unused:9092")


async def noop(ctx: sdk.Context) -> None:
    return None


def test_exports() -> None:
    for name in ("Cancel", "Timeouts", "TriggerCron"):
        assert name in sdk.__all__ and hasattr(sdk, name), name


def test_registration_carries_every_option() -> None:
    c = client()

    @c.create_function(
        fn_id="charge",
        trigger=[sdk.TriggerEvent(event="shop/order.created"),
                 sdk.TriggerCron(cron="TZ=Europe/Paris 0 9 * * 1-5")],
        cancel=[sdk.Cancel(event="shop/order.cancelled", match="event.data.order_id",
                           timeout="1h"),
                sdk.Cancel(event="shop/user.deleted",
                           if_exp="async.data.user_id == event.data.user_id")],
        timeouts=sdk.Timeouts(start="10s", finish=datetime.timedelta(minutes=5)),
        idempotency="event.data.payment_id",
    )
    async def charge(ctx: sdk.Context) -> None:
        return None

    reg = charge.config.registration(ts=42)
    assert reg == records.FunctionRegistered(
        fn_id="shop-charge", app_id="shop", name="charge",
        triggers=[{"event": "shop/order.created", "expression": None},
                  {"cron": "TZ=Europe/Paris 0 9 * * 1-5"}],
        retries=4, ts=42,
        cancel=[{"event": "shop/order.cancelled", "match": "data.order_id", "if_exp": None,
                 "timeout_ms": 3_600_000},
                {"event": "shop/user.deleted", "match": None,
                 "if_exp": "async.data.user_id == event.data.user_id", "timeout_ms": None}],
        timeouts={"start_ms": 10_000, "finish_ms": 300_000},
        idempotency="event.data.payment_id",
    )
    assert decode(encode(reg)) == reg


def test_defaults_register_no_options() -> None:
    c = client()
    f = c.create_function(fn_id="f", trigger=sdk.TriggerCron(cron="@hourly"),
                          cancel=sdk.Cancel(event="stop"),  # type: ignore[arg-type]
                          timeouts=sdk.Timeouts())(noop)
    reg = f.config.registration(ts=1)
    assert reg.triggers == [{"cron": "@hourly"}]
    assert reg.cancel == [{"event": "stop", "match": None, "if_exp": None, "timeout_ms": None}]
    assert (reg.timeouts, reg.idempotency) == (None, None)
    plain = c.create_function(fn_id="g", trigger=sdk.TriggerEvent(event="e"))(noop)
    reg = plain.config.registration(ts=1)
    assert (reg.cancel, reg.timeouts, reg.idempotency) == ([], None, None)
    assert sdk.Timeouts(finish=1).wire("f") == {"start_ms": None, "finish_ms": 1}


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"trigger": sdk.TriggerCron(cron="61 * * * *")},
     r"function 'f': trigger invalid cron '61 \* \* \* \*'.*out of range"),
    ({"trigger": sdk.TriggerCron(cron="TZ=Nowhere/Land 0 9 * * *")},
     "function 'f': trigger invalid cron .*unknown time zone 'Nowhere/Land'"),
    ({"trigger": [sdk.TriggerEvent(event="e", expression="event.data.x >")]},
     "function 'f': trigger 'e' expression 'event.data.x >' does not parse as CEL"),
    ({"trigger": [sdk.TriggerEvent(event="e"), "cron"]},
     "function 'f': triggers must be sdk.TriggerEvent, sdk.TriggerCron or sdk.TriggerTopic, got str"),
    ({"cancel": [sdk.Cancel(event="x", match="data..id")]},
     "function 'f': cancel on 'x': match 'data..id' is not a field path"),
    ({"cancel": [sdk.Cancel(event="x", if_exp="async.data.id ==")]},
     "function 'f': cancel on 'x': if_exp 'async.data.id ==' does not parse as CEL"),
    ({"cancel": [sdk.Cancel(event="x", timeout=0)]},
     "function 'f': cancel on 'x': timeout must be more than 0"),
    ({"cancel": [sdk.Cancel(event="x", timeout="later")]},
     "function 'f': cancel on 'x': timeout: cannot read duration 'later'"),
    ({"cancel": ["x"]}, "function 'f': cancel must be sdk.Cancel or a list of them, got str"),
    ({"timeouts": sdk.Timeouts(start=0)}, "function 'f': timeouts.start must be more than 0"),
    ({"timeouts": sdk.Timeouts(finish="-1s")},
     "function 'f': timeouts.finish: cannot read duration '-1s'"),
    ({"timeouts": {"start": "1s"}}, "function 'f': timeouts must be sdk.Timeouts or None, got dict"),
    ({"idempotency": "event.data.id +"},
     "function 'f': idempotency 'event.data.id \\+' does not parse as CEL"),
    ({"idempotency": ""}, "function 'f': idempotency '' is empty"),
    ({"idempotency": 5}, "function 'f': idempotency 5 must be a string, got int"),
    ({"on_failure": "handler"}, "function 'f': on_failure is not callable"),
])
def test_create_function_rejects_bad_options_naming_the_function(
        kwargs: dict[str, Any], expected: str) -> None:
    args: dict[str, Any] = {"fn_id": "f", "trigger": sdk.TriggerEvent(event="e")}
    args.update(kwargs)
    with pytest.raises(sdk.ConfigError, match=expected):
        client().create_function(**args)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: sdk.TriggerCron(cron=""), "TriggerCron.cron must be"),
    (lambda: sdk.TriggerCron(cron=5), "TriggerCron.cron must be"),
    (lambda: sdk.Cancel(event=""), "Cancel.event must be"),
    (lambda: sdk.Cancel(event="x", match=3), "Cancel.match must be"),
    (lambda: sdk.Cancel(event="x", if_exp=True), "Cancel.if_exp must be"),
    (lambda: sdk.Cancel(event="x", timeout=1.5), "Cancel.timeout must be"),
    (lambda: sdk.Timeouts(start=True), "Timeouts.start must be"),
    (lambda: sdk.Timeouts(finish=[1]), "Timeouts.finish must be"),
])
def test_options_check_their_shape_when_made(make: Any, expected: str) -> None:
    with pytest.raises(sdk.ConfigError, match=expected):
        make()


def test_trigger_expressions_must_parse_and_async_is_an_identifier() -> None:
    assert cel_problem("event.data.total > 0") is None
    assert cel_problem("async.data.id == event.data.id && async.name != ''") is None
    assert cel_problem("event.data.total >") is not None
    assert cel_problem(None) == "must be a string, got NoneType"
    assert match_path("async.data.x") == "data.x"
    with pytest.raises(TypeError):
        match_path(None)


# -- on_failure ----------------------------------------------------------------------


def test_on_failure_registers_a_function_of_its_own() -> None:
    c = client()

    async def handle_failure(ctx: sdk.Context) -> None:
        return None

    @c.create_function(fn_id="charge", name="Charge", retries=2,
                       trigger=sdk.TriggerEvent(event="shop/charge"), on_failure=handle_failure)
    async def charge(ctx: sdk.Context) -> None:
        return None

    failure = charge.on_failure
    assert failure is not None and failure.handler is handle_failure
    assert c.functions == [charge, failure]
    assert c.get_function("shop-charge-failure") is failure
    assert (failure.id, failure.fn_id, failure.name) == (
        "shop-charge-failure", "charge-failure", "Charge (on failure)")
    reg = failure.config.registration(ts=7)
    assert reg == records.FunctionRegistered(
        fn_id="shop-charge-failure", app_id="shop", name="Charge (on failure)",
        triggers=[{"event": records.FUNCTION_FAILED_EVENT,
                   "expression": 'event.data.function_id == "shop-charge"'}],
        retries=2, ts=7,
    )
    assert charge.config.registration(ts=7).fn_id == "shop-charge"


def test_on_failure_expression_quotes_odd_ids() -> None:
    c = client()
    f = c.create_function(fn_id='we"ird\\id', trigger=sdk.TriggerEvent(event="e"),
                          on_failure=noop)(noop)
    assert f.on_failure is not None
    [trigger] = f.on_failure.config.triggers
    assert isinstance(trigger, sdk.TriggerEvent)
    assert trigger.expression == 'event.data.function_id == "shop-we\\"ird\\\\id"'
    assert cel_problem(trigger.expression) is None


def test_on_failure_name_collisions() -> None:
    c = client()
    c.create_function(fn_id="a-failure", trigger=sdk.TriggerEvent(event="e"))(noop)
    with pytest.raises(sdk.ConfigError, match="already has a function 'a-failure'"):
        c.create_function(fn_id="a", trigger=sdk.TriggerEvent(event="e"), on_failure=noop)
    assert [f.fn_id for f in c.functions] == ["a-failure"]
    c.create_function(fn_id="b", trigger=sdk.TriggerEvent(event="e"), on_failure=noop)(noop)
    with pytest.raises(sdk.ConfigError, match="already has a function 'b-failure'"):
        c.create_function(fn_id="b-failure", trigger=sdk.TriggerEvent(event="e"))


def test_on_failure_handler_runs_with_the_failed_event() -> None:
    c = client()

    async def on_failure(ctx: sdk.Context) -> Any:
        data = ctx.event.data
        return await ctx.step.run("alert", lambda: f"{data['function_id']} run "
                                  f"{data['run_id']}: {data['error']['message']} "
                                  f"(order {data['event']['data']['order_id']})")

    main = c.create_function(fn_id="charge", trigger=sdk.TriggerEvent(event="shop/charge"),
                             on_failure=on_failure)(noop)
    assert main.on_failure is not None
    assert c.get_function("shop-charge-failure") is main.on_failure
    event = sdk.Event(name=records.FUNCTION_FAILED_EVENT, data={
        "function_id": "shop-charge", "run_id": "R1",
        "error": {"name": "ValueError", "message": "card declined", "stack": ""},
        "event": {"name": "shop/charge", "data": {"order_id": 7}, "id": "E0", "ts": NOW}})
    result = sdk.testing.trigger(main.on_failure, event)
    assert result.status == "completed"
    assert result.output == result.step("alert").output == (
        "shop-charge run R1: card declined (order 7)")


def test_sdk_checks_leave_the_engine_its_compiled_cel_runner() -> None:
    # cel-python has one parser per process, typed by whoever makes it first: the SDK
    # parsing first must not push the engine onto its slower interpreter.
    code = ("import sdk._expressions as x; assert x.cel_problem('event.data.a > 1') is None; "
            "from engine.expressions import CompiledExpression as C; "
            "assert C('event.data.total > 0').compiled")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
