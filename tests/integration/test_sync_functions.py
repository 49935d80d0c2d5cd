"""A sync app (``def`` handlers, as a Flask or Django app writes them) on the real
broker: blocking steps, a sleep, an event sent to another sync function, a sync failure
handler."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import sdk
from tests.integration.harness import Stack, app_stack, wait_for
from topics.settings import Settings

pytestmark = pytest.mark.kafka

calls: Counter[str] = Counter()
failures: list[dict[str, Any]] = []
lock = threading.Lock()


def count(name: str) -> str:
    with lock:
        calls[name] += 1
    return threading.current_thread().name


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="syncapp", settings=settings)

    @client.create_function(fn_id="order", trigger=sdk.TriggerEvent(event="sync/order"))
    def order(ctx: sdk.ContextSync) -> dict[str, Any]:
        thread = ctx.step.run("reserve", count, "reserve")
        ctx.step.sleep("settle", 300)
        ids = ctx.step.send_event("tell", sdk.Event(name="sync/ordered",
                                                    data={"id": ctx.event.data["id"]}))
        a, b = ctx.group.parallel([lambda: ctx.step.run("a", count, "a"),
                                   lambda: ctx.step.run("b", count, "b")])
        return {"body": threading.current_thread().name, "step": thread, "sent": ids,
                "lines": [a != "", b != ""]}

    @client.create_function(fn_id="ordered", trigger=sdk.TriggerEvent(event="sync/ordered"))
    def ordered(ctx: sdk.ContextSync) -> int:
        return int(ctx.event.data["id"]) * 2

    def on_failure(ctx: sdk.ContextSync) -> None:
        with lock:
            failures.append(ctx.event.data)

    @client.create_function(fn_id="doomed", trigger=sdk.TriggerEvent(event="sync/doomed"),
                            retries=0, on_failure=on_failure)
    def doomed(ctx: sdk.ContextSync) -> None:
        ctx.step.run("refuse", count, "refuse")
        raise sdk.NonRetriableError("out of stock")

    return client


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app_stack(broker, tmp_path_factory.mktemp("sync"), make_client,
                   ["syncapp-order", "syncapp-ordered", "syncapp-doomed",
                    "syncapp-doomed-failure"]) as s:
        yield s


def test_a_sync_function_runs_its_steps_end_to_end(stack: Stack) -> None:
    event_id = stack.send("sync/order", {"id": 21})
    run = stack.finished_run(event_id)
    assert run["status"] == "completed", run["error"]
    out = run["output"]
    assert out["body"].startswith("stepstream-sync-fn")  # the body's own thread
    assert out["step"].startswith("stepstream-step")  # handlers on the worker's step pool
    assert out["lines"] == [True, True]
    assert list(run["step_order"]) == ["reserve", "settle", "tell", "a", "b"]
    assert calls["reserve"] == calls["a"] == calls["b"] == 1  # memoized, never re-run
    [sent] = out["sent"]
    child = stack.finished_run(sent)
    assert (child["status"], child["output"]) == ("completed", 42)


def test_a_sync_failure_handler_runs_once_the_run_failed(stack: Stack) -> None:
    event_id = stack.send("sync/doomed", {"sku": "x"})
    run = stack.finished_run(event_id)
    assert run["status"] == "failed"
    assert run["error"]["message"] == "out of stock"
    got = wait_for(lambda: next((f for f in list(failures)
                                 if f["run_id"] == run["run_id"]), None),
                   30, "the failure handler")
    assert got["error"]["name"] == "NonRetriableError"
