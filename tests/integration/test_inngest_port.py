"""Inngest's shapes on the real broker: ``await client.send`` and ``send_sync``, a
failed run's error with its code through the HTTP API, typed (pydantic) outputs stored
as JSON, ``invoke(v=...)``, and a jittered cron tick starting its run after its delay."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

import sdk
from engine.runtime.cron import jitter_for
from tests.integration.harness import ServedApi, Stack, api_request, app_stack, wait_for
from topics.cron import parse_cron
from topics.settings import Settings

pytestmark = pytest.mark.kafka

EVERY_2S = "* * * * * */2"
JITTER_MS = 1500


class Order(pydantic.BaseModel):
    id: int
    total: float


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="port", settings=settings)

    @client.create_function(fn_id="echo", trigger=sdk.TriggerEvent(event="port/echo"))
    async def echo(ctx: sdk.Context) -> Any:
        return ctx.event.data

    @client.create_function(fn_id="refuse", retries=3,
                            trigger=sdk.TriggerEvent(event="port/refuse"))
    async def refuse(ctx: sdk.Context) -> None:
        raise sdk.NonRetriableError("order 7 cannot be refunded", quiet=True)

    @client.create_function(fn_id="flaky-step", retries=0,
                            trigger=sdk.TriggerEvent(event="port/flaky"))
    async def flaky_step(ctx: sdk.Context) -> None:
        def charge() -> None:
            raise ConnectionError("card service down")
        await ctx.step.run("charge", charge)

    @client.create_function(fn_id="typed", trigger=sdk.TriggerEvent(event="port/typed"),
                            output_type=Order)
    async def typed(ctx: sdk.Context) -> Order:
        order = await ctx.step.run("load", lambda: Order(id=7, total=12.5), output_type=Order)
        assert isinstance(order, Order)  # a model again on replay, not a dict
        return order.model_copy(update={"total": order.total * 2})

    @client.create_function(fn_id="child", trigger=sdk.TriggerEvent(event="port/never"))
    async def child(ctx: sdk.Context) -> Any:
        return {"v": ctx.event.v, "data": ctx.event.data}

    @client.create_function(fn_id="parent", trigger=sdk.TriggerEvent(event="port/invoke"))
    async def parent(ctx: sdk.Context) -> Any:
        return await ctx.step.invoke("call", function=child, data={"n": 1}, v="2024-06")

    @client.create_function(fn_id="jittered",
                            trigger=sdk.TriggerCron(cron=EVERY_2S, jitter=JITTER_MS))
    async def jittered(ctx: sdk.Context) -> int:
        assert ctx.cron_tick is not None
        return int(ctx.cron_tick.timestamp() * 1000)

    return client


FUNCTIONS = [f"port-{f}" for f in ("echo", "refuse", "flaky-step", "typed", "child", "parent",
                                    "jittered")]


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app_stack(broker, tmp_path_factory.mktemp("port"), make_client, FUNCTIONS) as s:
        yield s


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[str]:
    served = ServedApi(stack, dev=True)
    try:
        yield served.url
    finally:
        served.close()


def test_send_awaited_and_send_sync_both_return_ids(stack: Stack) -> None:
    client: sdk.Client = stack.client
    sent = asyncio.run(client.send([sdk.Event(name="port/echo", data={"n": 1}),
                                    sdk.Event(name="port/echo", data={"n": 2}, id="", ts=0)]))
    [one] = client.send_sync(sdk.Event(name="port/echo", data={"n": 3}))
    assert len(sent) == 2 and all(sent) and one
    outputs = [stack.finished_run(e)["output"] for e in [*sent, one]]
    assert outputs == [{"n": 1}, {"n": 2}, {"n": 3}]


def run_via_api(stack: Stack, api: str, event_id: str) -> dict[str, Any]:
    run_id = stack.finished_run(event_id)["run_id"]
    status, body = api_request(api, "GET", f"/v1/runs/{run_id}")
    assert status == 200, body
    return dict(body["data"])


def test_a_failed_runs_error_has_inngests_shape_and_a_code(stack: Stack, api: str) -> None:
    refused = run_via_api(stack, api, stack.send("port/refuse", {}))
    error = refused["error"]
    assert set(error) == {"name", "message", "stack", "code"}, error
    assert (error["name"], error["code"]) == ("NonRetriableError", "non_retriable_error")
    assert error["message"] == "order 7 cannot be refunded"
    assert "Traceback" in error["stack"]
    assert refused["attempt"] == 0  # not retried

    flaky = run_via_api(stack, api, stack.send("port/flaky", {}))
    assert (flaky["error"]["name"], flaky["error"]["code"]) == ("ConnectionError",
                                                               "step_errored")
    [charge] = flaky["steps"]
    assert charge["error"]["code"] == "step_errored"


def test_typed_outputs_are_stored_as_json(stack: Stack) -> None:
    run = stack.finished_run(stack.send("port/typed", {}))
    assert run["status"] == "completed", run
    assert run["output"] == {"id": 7, "total": 25.0}
    assert run["steps"]["load"]["output"] == {"id": 7, "total": 12.5}


def test_invoke_v_becomes_the_childs_event_v(stack: Stack) -> None:
    run = stack.finished_run(stack.send("port/invoke", {}))
    assert run["output"] == {"v": "2024-06", "data": {"n": 1}}, run


def test_a_jittered_cron_tick_starts_after_its_delay(stack: Stack) -> None:
    fn_id = "port-jittered"
    schedule = parse_cron(EVERY_2S)
    schedule.jitter_ms = JITTER_MS
    assert stack.engine is not None

    def jittered_runs() -> list[dict[str, Any]]:
        assert stack.engine is not None
        return [dict(r) for r in stack.engine.queries.list_runs(500)
                if r["fn_id"] == fn_id and r["status"] == "completed"]

    for run in wait_for(lambda: [r for r in jittered_runs()
                                 if jitter_for(fn_id, schedule, r["output"]) > 300] or None,
                        40, "a cron run with a jitter over 300 ms"):
        tick = run["output"]
        assert schedule.latest_at_or_before(tick) == tick  # a real tick, not shifted
        assert run["requested_at"] >= tick + jitter_for(fn_id, schedule, tick)
