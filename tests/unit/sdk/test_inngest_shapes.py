"""Inngest's names and shapes, without a broker: send/send_sync, the Client's
constructor arguments, error codes and quiet errors, and events' "not set" values."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

import sdk
from sdk._events import to_record
from tests.unit.sdk.test_execution import NOW, SETTINGS, define, err, make_task, only, run
from topics import records
from topics.settings import Settings

# -- send / send_sync -----------------------------------------------------------------


def test_send_is_the_coroutine_and_send_sync_blocks() -> None:
    client = sdk.Client(app_id="a", brokers="127.0.0.1:1")
    assert inspect.iscoroutinefunction(client.send)
    assert not inspect.iscoroutinefunction(client.send_sync)
    # Both check every event before producing any.
    with pytest.raises(sdk.EventError):
        client.send_sync(sdk.Event(name=""))


def test_send_async_is_a_deprecated_alias() -> None:
    client = sdk.Client(app_id="a", brokers="127.0.0.1:1")
    with pytest.warns(DeprecationWarning, match="await client.send"), \
            pytest.raises(sdk.EventError):
        asyncio.run(client.send_async([sdk.Event(name="")]))


def test_unset_id_and_ts_as_inngest_writes_them() -> None:
    wire = to_record(sdk.Event(name="n", id="", ts=0), default_id="generated", now_ms=NOW,
                     settings=SETTINGS)
    assert (wire.id, wire.ts) == ("generated", NOW)
    kept = to_record(sdk.Event(name="n", id="mine", ts=5), default_id="generated",
                     now_ms=NOW, settings=SETTINGS)
    assert (kept.id, kept.ts) == ("mine", 5)


# -- Client(...) ------------------------------------------------------------------------


def test_client_takes_inngests_meaningful_arguments() -> None:
    logger = logging.getLogger("my-app")
    client = sdk.Client(app_id="a", brokers="b:9092", logger=logger,
                        middleware=[sdk.MiddlewareSync], is_production=True, event_key="k1",
                        env="staging")
    assert client.logger is logger
    assert client.middleware == [sdk.MiddlewareSync]
    assert (client.is_production, client.event_key, client.env) == (True, "k1", "staging")
    # env selects that environment's topics.
    assert client.settings.prefix == "stepstream.staging."
    assert client.catalog.events.startswith("stepstream.staging.")
    plain = sdk.Client(app_id="a", brokers="b:9092")
    assert plain.middleware == [] and plain.settings.prefix == "stepstream."


@pytest.mark.parametrize("name", ["signing_key", "api_base_url", "event_api_base_url",
                                  "serializer", "signing_key_fallback"])
def test_client_refuses_inngest_arguments_without_meaning(name: str) -> None:
    with pytest.raises(TypeError, match=f"{name}= has no meaning in stepstream: .+"):
        sdk.Client(app_id="a", **{name: "x"})


def test_client_refuses_unknown_and_badly_typed_arguments() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        sdk.Client(app_id="a", colour="red")
    with pytest.raises(TypeError, match="middleware must be a list"):  # sdk._middleware's
        sdk.Client(app_id="a", middleware=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="logger"):
        sdk.Client(app_id="a", logger="root")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="env"):
        sdk.Client(app_id="a", env="no spaces")


def test_production_client_never_falls_back_to_the_dev_broker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STEPSTREAM_BROKERS", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(sdk.ConfigError, match="is_production=True"):
        _ = sdk.Client(app_id="a", is_production=True).settings
    assert sdk.Client(app_id="a", is_production=True,
                      settings=Settings(brokers="b:9092")).settings.brokers == "b:9092"
    monkeypatch.setenv("STEPSTREAM_BROKERS", "env:9092")
    assert sdk.Client(app_id="a", is_production=True).settings.brokers == "env:9092"


# -- errors: code and quiet -------------------------------------------------------------


def failing(exc: Exception) -> sdk.Function:
    async def fn(ctx: sdk.Context) -> None:
        raise exc
    return define(fn)


@pytest.mark.parametrize(("exc", "code", "retriable"), [
    (ValueError("v"), "function_errored", True),
    (sdk.NonRetriableError("n"), "non_retriable_error", False),
    (sdk.RetryAfterError("r", 1000), "retry_after_error", True),
])
def test_a_failed_function_error_has_name_message_stack_and_code(
        exc: Exception, code: str, retriable: bool) -> None:
    o = only(run(failing(exc), make_task()))
    assert o.op == records.FUNCTION_FAILED and o.retriable is retriable
    assert o.error is not None
    assert set(o.error) == {"name", "message", "stack", "code"}
    assert (o.error["name"], o.error["code"]) == (type(exc).__name__, code)
    assert "Traceback" in str(o.error["stack"])


def test_step_errors_carry_their_code_to_the_run() -> None:
    async def fn(ctx: sdk.Context) -> None:
        await ctx.step.run("charge", lambda: None)

    # A step that raised an ordinary exception, retries exhausted: step_errored.
    o = only(run(define(fn), make_task({"charge": err("CardDeclined")})))
    assert o.error is not None and o.error["code"] == "step_errored"
    # A step that raised NonRetriableError: the run says so, as Inngest's does.
    memo = err("NonRetriableError")
    memo["error"]["code"] = "non_retriable_error"
    o = only(run(define(fn), make_task({"charge": memo})))
    assert o.error is not None
    assert (o.error["name"], o.error["code"]) == ("NonRetriableError", "non_retriable_error")
    # An invoked child's plain failure is, for the parent, a step that errored.
    memo["error"]["code"] = "function_errored"
    o = only(run(define(fn), make_task({"charge": memo})))
    assert o.error is not None and o.error["code"] == "step_errored"


def test_a_step_failure_is_logged_unless_quiet(caplog: pytest.LogCaptureFixture) -> None:
    def step_raising(exc: Exception) -> sdk.Function:
        async def fn(ctx: sdk.Context) -> None:
            def boom() -> None:
                raise exc
            await ctx.step.run("s", boom)
        return define(fn)

    caplog.set_level(logging.INFO, logger="stepstream.worker")
    run(step_raising(sdk.NonRetriableError("step-loud")), make_task())
    run(step_raising(sdk.NonRetriableError("hush", quiet=True)), make_task())
    run(step_raising(sdk.RetryAfterError("later", 10, quiet=True)), make_task())
    run(failing(sdk.RetryAfterError("fn later", 10, quiet=True)), make_task())
    run(failing(sdk.NonRetriableError("fn-loud")), make_task())
    logged = caplog.text
    assert "step-loud" in logged and "fn-loud" in logged
    assert "hush" not in logged and "later" not in logged
    with pytest.raises(TypeError, match="quiet"):
        sdk.NonRetriableError("x", quiet="yes")  # type: ignore[arg-type]


def test_nested_step_error_is_not_an_exception_and_has_its_code() -> None:
    from sdk._step import NestedStepError
    assert not issubclass(NestedStepError, Exception)
    caught: list[str] = []

    async def fn(ctx: sdk.Context) -> None:
        async def outer() -> None:
            try:
                await ctx.step.run("inner", lambda: 1)
            except Exception:
                caught.append("swallowed")
        await ctx.step.run("outer", outer)

    o = only(run(define(fn), make_task()))
    assert caught == []
    assert o.retriable is False and o.error is not None
    assert (o.error["name"], o.error["code"]) == ("NestedStepError", "step_nested")


def test_invoke_v_becomes_the_child_events_v() -> None:
    async def fn(ctx: sdk.Context) -> None:
        await ctx.step.invoke_by_id("child", function_id="other", data={"a": 1}, v="2024-01")

    o = only(run(define(fn), make_task()))
    assert o.op == records.STEP_INVOKE and o.invoke is not None
    assert o.invoke["v"] == "2024-01"
    assert sdk.Event.from_wire({"name": "x", "v": "2024-01"}).v == "2024-01"
