"""Waiting, composing and guarding runs end to end on the real broker: wait_for_event
(with its races), cancellation, invoke, on_failure and function.* events, timeouts,
idempotency and event-id dedupe. One engine and one worker for the module."""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import sdk
from engine.api.ingest import EventIngest
from engine.api.views import RunFilter
from tests.integration.harness import Stack, app_stack, wait_for
from topics.settings import Settings

pytestmark = pytest.mark.kafka

calls: Counter[str] = Counter()
lock = threading.Lock()
gates: dict[str, threading.Event] = {}
entered: dict[str, threading.Event] = {}


def count(name: str) -> int:
    with lock:
        calls[name] += 1
        return calls[name]


def gate(key: str) -> threading.Event:
    with lock:
        return gates.setdefault(key, threading.Event())


def entered_flag(key: str) -> threading.Event:
    with lock:
        return entered.setdefault(key, threading.Event())


FNS = ("waiter", "conditional", "cancellable", "parent", "child", "failing-child",
       "slow-child", "doomed", "doomed-failure", "watcher", "finish-limited", "paying")


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="flow", settings=settings)

    @client.create_function(fn_id="waiter", trigger=sdk.TriggerEvent(event="flow/invoice.created"))
    async def waiter(ctx: sdk.Context) -> Any:
        timeout = datetime.timedelta(milliseconds=ctx.event.data.get("timeout_ms", 20_000))
        paid = await ctx.step.wait_for_event("paid", event="flow/invoice.paid", timeout=timeout,
                                             match="data.invoice_id")
        return None if paid is None else paid.data

    @client.create_function(fn_id="conditional",
                            trigger=sdk.TriggerEvent(event="flow/bid.opened"))
    async def conditional(ctx: sdk.Context) -> Any:
        bid = await ctx.step.wait_for_event(
            "bid", event="flow/bid.placed", timeout=datetime.timedelta(seconds=20),
            if_exp="async.data.lot == event.data.lot && async.data.amount >= event.data.min")
        return None if bid is None else bid.data["amount"]

    @client.create_function(fn_id="cancellable", trigger=sdk.TriggerEvent(event="flow/job.started"),
                            cancel=[sdk.Cancel(event="flow/job.cancelled", match="data.job")])
    async def cancellable(ctx: sdk.Context) -> str:
        job = ctx.event.data["job"]

        def slow() -> str:
            entered_flag(job).set()
            gate(job).wait(30)
            return "slow done"

        await ctx.step.run("slow", slow)
        await ctx.step.run("after", lambda: count("after:" + job))
        return "finished"

    @client.create_function(fn_id="child", trigger=sdk.TriggerEvent(event="flow/never-child"))
    async def child(ctx: sdk.Context) -> int:
        return await ctx.step.run("double", lambda: ctx.event.data["n"] * 2)

    @client.create_function(fn_id="failing-child", retries=0,
                            trigger=sdk.TriggerEvent(event="flow/never-failing"))
    async def failing_child(ctx: sdk.Context) -> None:
        def boom() -> None:
            raise ValueError("child says no")
        await ctx.step.run("boom", boom)

    @client.create_function(fn_id="slow-child", trigger=sdk.TriggerEvent(event="flow/never-slow"))
    async def slow_child(ctx: sdk.Context) -> str:
        await ctx.step.sleep("nap", datetime.timedelta(seconds=5))
        return "late"

    @client.create_function(fn_id="parent", trigger=sdk.TriggerEvent(event="flow/parent"))
    async def parent(ctx: sdk.Context) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["double"] = await ctx.step.invoke("call-child", function=child, data={"n": 21})
        try:
            await ctx.step.invoke_by_id("call-failing", function_id="failing-child")
        except sdk.StepError as exc:
            out["failed"] = str(exc)
        try:
            await ctx.step.invoke("call-slow", function=slow_child,
                                  timeout=datetime.timedelta(seconds=1))
        except sdk.StepError as exc:
            out["timeout"] = exc.name
        return out

    async def on_doomed_failure(ctx: sdk.Context) -> dict[str, Any]:
        return {"error": ctx.event.data["error"]["message"],
                "original": ctx.event.data["event"]["data"]}

    @client.create_function(fn_id="doomed", retries=0, on_failure=on_doomed_failure,
                            trigger=sdk.TriggerEvent(event="flow/doomed"))
    async def doomed(ctx: sdk.Context) -> None:
        raise sdk.NonRetriableError("doomed from the start")

    @client.create_function(fn_id="watcher", trigger=sdk.TriggerEvent(
        event="stepstream/function.finished",
        expression="event.data.function_id == 'flow-child'"))
    async def watcher(ctx: sdk.Context) -> Any:
        return {"watched": ctx.event.data["run_id"], "output": ctx.event.data.get("output")}

    @client.create_function(fn_id="finish-limited",
                            trigger=sdk.TriggerEvent(event="flow/limited"),
                            timeouts=sdk.Timeouts(finish=datetime.timedelta(seconds=1)))
    async def finish_limited(ctx: sdk.Context) -> str:
        await ctx.step.sleep("long", datetime.timedelta(seconds=30))
        return "never"

    @client.create_function(fn_id="paying", idempotency="event.data.payment_id",
                            trigger=sdk.TriggerEvent(event="flow/pay"))
    async def paying(ctx: sdk.Context) -> str:
        count("pay:" + str(ctx.event.data["payment_id"]))
        return "paid"

    return client


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app_stack(broker, tmp_path_factory.mktemp("flow"), make_client,
                   [f"flow-{f}" for f in FNS]) as s:
        yield s
        for g in gates.values():  # free any step still parked on a gate before closing
            g.set()


def run_of(stack: Stack, event_id: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (stack.runs_for(event_id) or [None])[0], timeout,
                    f"the run of {event_id}")


def waiting_on_event(stack: Stack, event_id: str) -> dict[str, Any]:
    def registered() -> dict[str, Any] | None:
        runs = stack.runs_for(event_id)
        if runs and (runs[0].get("waiting") or {}).get("kind") == "event":
            return runs[0]
        return None
    return wait_for(registered, 30, f"the run of {event_id} to wait for an event")


def runs_of(stack: Stack, fn_id: str) -> list[dict[str, Any]]:
    """Completed runs of one function, through the filtered listing."""
    assert stack.engine is not None
    return stack.engine.queries.list_runs(
        1000, flt=RunFilter(function=fn_id, statuses=frozenset({"completed"})))


def types(run: dict[str, Any]) -> list[str]:
    return [e["type"] for e in run["timeline"]]


def test_event_sent_before_the_wait_does_not_match(stack: Stack) -> None:
    invoice = uuid.uuid4().hex
    stack.send("flow/invoice.paid", {"invoice_id": invoice})
    # Let the earlier event pass through the matcher before the wait exists.
    run_of(stack, stack.send("flow/invoice.created", {"invoice_id": "other"}))
    created = stack.send("flow/invoice.created", {"invoice_id": invoice, "timeout_ms": 1500})
    run = stack.finished_run(created)
    assert run["status"] == "completed" and run["output"] is None
    assert "wait.timed_out" in types(run) and "wait.resolved" not in types(run)


def test_events_right_after_the_wait_registered_are_never_missed(stack: Stack) -> None:
    invoices = [uuid.uuid4().hex for _ in range(10)]
    created = [stack.send("flow/invoice.created", {"invoice_id": i}) for i in invoices]
    for invoice, event_id in zip(invoices, created, strict=True):
        waiting_on_event(stack, event_id)
        stack.send("flow/invoice.paid", {"invoice_id": invoice, "amount": 5})
    for invoice, event_id in zip(invoices, created, strict=True):
        run = stack.finished_run(event_id)
        assert run["output"] == {"invoice_id": invoice, "amount": 5}, run["timeline"]


def test_one_event_resolves_every_waiting_run(stack: Stack) -> None:
    invoice = uuid.uuid4().hex
    created = [stack.send("flow/invoice.created", {"invoice_id": invoice}) for _ in range(5)]
    for event_id in created:
        waiting_on_event(stack, event_id)
    stack.send("flow/invoice.paid", {"invoice_id": invoice})
    for event_id in created:
        assert stack.finished_run(event_id)["output"] == {"invoice_id": invoice}


def test_event_and_timeout_together_record_exactly_one(stack: Stack) -> None:
    runs = []
    for offset_ms in (-40, -20, -10, 0, 0, 5, 10, 20, 40):
        invoice = uuid.uuid4().hex
        created = stack.send("flow/invoice.created", {"invoice_id": invoice,
                                                      "timeout_ms": 1000})
        run = waiting_on_event(stack, created)
        due = run["waiting"]["due_ms"]
        time.sleep(max(0.0, (due + offset_ms) / 1000 - time.time()))  # aim at the deadline
        stack.send("flow/invoice.paid", {"invoice_id": invoice})
        runs.append(created)
    for created in runs:
        run = stack.finished_run(created)
        resolved = types(run).count("wait.resolved")
        timed_out = types(run).count("wait.timed_out")
        assert resolved + timed_out == 1, run["timeline"]
        assert (run["output"] is None) == (timed_out == 1)


def test_if_exp_compares_the_candidate_with_the_trigger(stack: Stack) -> None:
    lot = uuid.uuid4().hex
    opened = stack.send("flow/bid.opened", {"lot": lot, "min": 100})
    waiting_on_event(stack, opened)
    stack.send("flow/bid.placed", {"lot": lot, "amount": 50})
    stack.send("flow/bid.placed", {"lot": "other", "amount": 500})
    stack.send("flow/bid.placed", {"lot": lot, "amount": 150})
    assert stack.finished_run(opened)["output"] == 150


def cancellations_received(stack: Stack) -> float:
    """How many task.cancelled records the stack's worker has taken."""
    return stack.workers[0][0].metrics.registry.get_sample_value(
        "stepstream_worker_task_cancellations_received_total") or 0.0


def release_when_told(stack: Stack, job: str, before: float) -> None:
    """Let the job's slow step finish once the worker has its run's task.cancelled: a
    step that starts before that runs (the documented window), one after it must not."""
    wait_for(lambda: cancellations_received(stack) > before, 30,
             "the worker to receive task.cancelled")
    gate(job).set()


def test_cancel_by_event_while_a_step_executes(stack: Stack) -> None:
    job = uuid.uuid4().hex
    started = stack.send("flow/job.started", {"job": job})
    assert entered_flag(job).wait(30), "the slow step never started"
    before = cancellations_received(stack)
    cancel_id = stack.send("flow/job.cancelled", {"job": job})
    run = stack.finished_run(started)
    release_when_told(stack, job, before)  # the executing step finishes now; its outcome must not resume the run
    assert run["status"] == "cancelled"
    assert run["cancelled_by"]["kind"] == "event" and run["cancelled_by"]["event_id"] == cancel_id
    # The finished step's report arrives and is ignored: "after" never runs.
    ignored = wait_for(lambda: [e for e in stack.run(run["run_id"])["timeline"]
                                if e["type"] == "outcome.ignored"], 30, "the late report")
    assert ignored[0]["detail"]["steps"] == ["slow"]
    assert calls["after:" + job] == 0
    assert stack.run(run["run_id"])["status"] == "cancelled"


def test_cancel_through_the_api_says_who(stack: Stack) -> None:
    job = uuid.uuid4().hex
    started = stack.send("flow/job.started", {"job": job})
    assert entered_flag(job).wait(30)
    run = run_of(stack, started)
    before = cancellations_received(stack)
    ingest = EventIngest(stack.settings)
    ingest.start()
    try:
        asyncio.run(ingest.request_cancel(run["run_id"], run["partition_key"], "test says so"))
    finally:
        ingest.close()
    done = stack.finished_run(started)
    release_when_told(stack, job, before)
    assert done["status"] == "cancelled"
    assert done["cancelled_by"] == {"kind": "api", "reason": "test says so"}
    ignored = wait_for(lambda: [e for e in stack.run(done["run_id"])["timeline"]
                                if e["type"] == "outcome.ignored"], 30, "the late report")
    assert ignored[0]["detail"]["steps"] == ["slow"]
    assert calls["after:" + job] == 0


def test_invoke_returns_child_output_and_raises_child_failure_and_timeout(stack: Stack) -> None:
    event_id = stack.send("flow/parent", {})
    run = stack.finished_run(event_id, timeout=60)
    assert run["status"] == "completed", run["error"]
    out = run["output"]
    assert out["double"] == 42
    assert "child says no" in out["failed"]
    assert out["timeout"] == "InvokeTimeoutError"
    assert run["steps"]["call-child"]["output"] == 42
    child_id = next(
        e["detail"]["child_run_id"] for e in run["timeline"]
        if e["type"] == "invoke.requested" and e["step_id"] == "call-child")
    child = stack.run(child_id)
    assert child is not None and child["parent"]["run_id"] == run["run_id"]
    # function.finished of the child triggered the watcher.
    watched = wait_for(lambda: [r for r in runs_of(stack, "flow-watcher")
                                if r["output"]["watched"] == child_id], 30, "the watcher")
    assert watched[0]["output"]["output"] == 42


def test_on_failure_runs_with_the_error_and_original_event(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    event_id = stack.send("flow/doomed", {"marker": marker})
    assert stack.finished_run(event_id)["status"] == "failed"

    def handler_run() -> list[dict[str, Any]]:
        return [r for r in runs_of(stack, "flow-doomed-failure")
                if r["output"]["original"] == {"marker": marker}]
    [handled] = wait_for(handler_run, 30, "the on_failure handler")
    assert handled["output"]["error"] == "doomed from the start"


def test_finish_timeout_cancels_with_that_reason(stack: Stack) -> None:
    run = stack.finished_run(stack.send("flow/limited", {}))
    assert run["status"] == "cancelled"
    assert run["cancelled_by"]["kind"] == "timeout" and run["cancelled_by"]["which"] == "finish"


def test_same_event_id_three_times_starts_one_run_and_all_are_accepted(stack: Stack) -> None:
    payment = uuid.uuid4().hex
    event_id = f"evt-{payment}"
    ids = [stack.send("flow/pay", {"payment_id": payment}, event_id=event_id)
           for _ in range(3)]
    assert ids == [event_id] * 3
    run = stack.finished_run(event_id)
    wait_for(lambda: types(stack.run(run["run_id"]) or {"timeline": []}).count(
        "run.deduplicated") == 2, 30, "both duplicates to be recorded")
    assert calls["pay:" + payment] == 1
    assert [r["run_id"] for r in stack.runs_for(event_id)] == [run["run_id"]]


def test_idempotency_key_starts_one_run_per_key(stack: Stack) -> None:
    payment = uuid.uuid4().hex
    first = stack.send("flow/pay", {"payment_id": payment})
    others = [stack.send("flow/pay", {"payment_id": payment}) for _ in range(2)]
    run = stack.finished_run(first)
    for other in others:
        # Each duplicate points at the one run that holds the key.
        assert wait_for(lambda other=other: stack.runs_for(other), 30)[0]["run_id"] == \
            run["run_id"]
    assert calls["pay:" + payment] == 1
    fresh = stack.send("flow/pay", {"payment_id": payment + "-2"})
    assert stack.finished_run(fresh)["run_id"] != run["run_id"]


def test_start_timeout_cancels_a_run_no_worker_picks_up(stack: Stack) -> None:
    idle = sdk.Client(app_id="idle", settings=stack.settings)

    @idle.create_function(fn_id="unattended", trigger=sdk.TriggerEvent(event="flow/unattended"),
                          timeouts=sdk.Timeouts(start=datetime.timedelta(seconds=1)))
    async def unattended(ctx: sdk.Context) -> str:
        return "picked up"

    # A worker publishes the definition and leaves: nobody executes this app's tasks.
    worker = stack.start_worker(idle)
    stack.wait_functions("idle-unattended")
    worker.stop()
    stack.workers[-1][1].join(30)
    stack.workers.pop()
    try:
        run = stack.finished_run(stack.send("flow/unattended", {}))
    finally:
        idle.close()
    assert run["status"] == "cancelled"
    assert run["cancelled_by"] == {"kind": "timeout", "which": "start", "limit_ms": 1000}
    assert run["ended_at"] - run["requested_at"] >= 1000
