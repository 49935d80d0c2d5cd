"""The function registry on the real broker: app sync removes the functions an app no
longer defines (their cron stops), a run no worker has begun is Queued, and
``stepstream functions list|show|remove`` with their API paths."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import sdk
from engine import cli
from engine.api.views import parse_rfc3339
from tests.integration.harness import API_KEY, Api, Stack, wait_for
from topics.cron import parse_cron

pytestmark = pytest.mark.kafka

EVERY_SECOND = "* * * * * *"
DAILY = "0 9 * * *"


@pytest.fixture(scope="module")
def api(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Api]]:
    tmp = tmp_path_factory.mktemp("functions")
    stack = Stack(broker, tmp)
    try:
        yield stack, Api(stack, tmp)
    finally:
        stack.close()


def stop_worker(stack: Stack, worker: Any) -> None:
    for i, (w, thread) in enumerate(stack.workers):
        if w is worker:
            w.stop()
            thread.join(30)
            assert not thread.is_alive()
            del stack.workers[i]
            return


def sync_app(stack: Stack, with_ticker: bool) -> sdk.Client:
    client = sdk.Client(app_id="sync", settings=stack.settings)
    if with_ticker:
        @client.create_function(fn_id="ticker", trigger=sdk.TriggerCron(cron=EVERY_SECOND))
        async def ticker(ctx: sdk.Context) -> str:
            return "tick"

    @client.create_function(fn_id="ping", trigger=sdk.TriggerEvent(event="sync/ping"))
    async def ping(ctx: sdk.Context) -> str:
        return "pong"

    return client


def test_app_sync_removes_a_function_its_worker_no_longer_defines_and_its_cron_stops(
        api: tuple[Stack, Api]) -> None:
    stack, engine = api
    v1 = sync_app(stack, with_ticker=True)
    v2 = sync_app(stack, with_ticker=False)
    try:
        first = stack.start_worker(v1)
        wait_for(lambda: {"sync-ticker", "sync-ping"} <= engine.function_ids(), 30,
                 "v1's functions registered")
        wait_for(lambda: engine.runs(function="sync-ticker", status="completed"), 30,
                 "a cron run completed by v1's worker")
        stop_worker(stack, first)

        # No worker: the runs the cron keeps requesting, and an event's run, are Queued.
        queued = wait_for(lambda: engine.runs(function="sync-ticker", status="queued"), 30,
                          "a cron run queued while the app has no worker")
        assert {r["status"] for r in queued} == {"Queued"}
        assert all(r["started_at"] is None for r in queued)
        [ping_id] = v1.send_sync(sdk.Event(name="sync/ping", data={}))
        [ping] = wait_for(lambda: engine.get(f"/v1/events/{ping_id}/runs")[1]["data"], 30,
                          "the ping run")
        assert ping["status"] == "Queued"

        # The app comes back without the ticker: app sync removes it.
        stack.start_worker(v2)
        wait_for(lambda: "sync-ticker" not in engine.function_ids(), 30,
                 "the ticker removed by app sync")
        removed_at = int(time.time() * 1000)
        assert "sync-ping" in engine.function_ids()
        assert engine.get("/v1/functions/sync-ticker")[0] == 404
        # A worker starting it is what ends Queued.
        done = wait_for(lambda: [r for r in engine.get(f"/v1/events/{ping_id}/runs")[1]["data"]
                                 if r["status"] == "Completed"], 30, "the queued ping run done")
        assert done[0]["output"] == "pong"
        # Runs of the removed function keep their state; the app's worker, which no
        # longer has the function, fails them when it takes their task.
        was_queued = {r["run_id"] for r in queued}
        wait_for(lambda: was_queued <= {r["run_id"] for r in engine.runs(
            function="sync-ticker", status="failed")}, 30, "the queued cron runs failed")
        failed = engine.get(f"/v1/runs/{sorted(was_queued)[0]}")[1]["data"]
        assert failed["error"]["name"] == "FunctionNotFound"

        # Three ticks' time: observing that nothing fires, not synchronisation.
        time.sleep(3)
        ticks = [parse_rfc3339(r["cron"]["tick"]) for r in engine.runs(function="sync-ticker")]
        assert ticks and max(t for t in ticks if t is not None) <= removed_at
    finally:
        v1.close()
        v2.close()


def catalog_app(stack: Stack) -> sdk.Client:
    client = sdk.Client(app_id="cat", settings=stack.settings)

    @client.create_function(fn_id="report", retries=2, trigger=[
        sdk.TriggerCron(cron=DAILY), sdk.TriggerEvent(event="cat/report")])
    async def report(ctx: sdk.Context) -> str:
        return "report"

    @client.create_function(fn_id="echo", trigger=sdk.TriggerEvent(event="cat/*"))
    async def echo(ctx: sdk.Context) -> str:
        return "echo"

    return client


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_functions_list_show_remove_through_cli_and_api(
        api: tuple[Stack, Api], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    stack, engine = api
    monkeypatch.setenv("STEPSTREAM_API_KEYS", API_KEY)  # the CLI sends the engine's key
    client = catalog_app(stack)
    try:
        stack.start_worker(client)
        wait_for(lambda: {"cat-report", "cat-echo"} <= engine.function_ids(), 30,
                 "the functions registered")
        status, body = engine.get("/v1/functions/cat-report")
        assert status == 200
        view = body["data"]
        assert (view["id"], view["app_id"], view["retries"]) == ("cat-report", "cat", 2)
        assert view["triggers"] == [{"cron": DAILY}, {"event": "cat/report",
                                                      "expression": None}]
        next_cron = parse_rfc3339(view["next_cron"])
        assert next_cron == parse_cron(DAILY).next_after(int(time.time() * 1000))
        assert engine.get("/v1/functions/cat-echo")[1]["data"]["next_cron"] is None

        code, out, err = run_cli(capsys, "functions", "list", "--api", engine.base)
        assert code == 0, err
        row = next(line for line in out.splitlines() if "cat-report" in line)
        assert "cat" in row and f"cron {DAILY}" in row and view["next_cron"] in row
        assert "event cat/*" in next(line for line in out.splitlines() if "cat-echo" in line)
        code, out, err = run_cli(capsys, "functions", "show", "cat-report", "--api",
                                 engine.base)
        assert code == 0, err
        assert "function cat-report" in out and "retries 2" in out
        assert "trigger event cat/report" in out and f"trigger cron {DAILY}" in out

        # Unknown ids: 404 with a message; the CLI says so in one line, exit 2.
        for method in ("GET", "DELETE"):
            status, body = engine.call(method, "/v1/functions/cat-nope")
            assert status == 404 and "no function 'cat-nope' is registered" in body["error"]
        for verb in ("show", "remove"):
            code, out, err = run_cli(capsys, "functions", verb, "cat-nope", "--api",
                                     engine.base)
            assert code == 2 and out == ""
            assert err.count("\n") == 1 and "no function 'cat-nope' is registered" in err

        code, out, err = run_cli(capsys, "functions", "remove", "cat-echo", "--api",
                                 engine.base)
        assert code == 0 and "function cat-echo removed" in out, err
        wait_for(lambda: "cat-echo" not in engine.function_ids(), 30, "cat-echo removed")
        # The engine's log says so (at its default level): events that start nothing
        # from here must not look lost.
        wait_for(lambda: "function cat-echo removed from the registry" in
                 (stack.tmp / "engine.log").read_text(errors="replace"), 30,
                 "the removal in the engine's log")
        # An event both functions matched now starts only the one still registered.
        [event_id] = client.send_sync(sdk.Event(name="cat/report", data={}))
        done = wait_for(lambda: [r for r in engine.get(f"/v1/events/{event_id}/runs")[1]["data"]
                                 if r["status"] == "Completed"], 30, "the report run")
        assert [r["function_id"] for r in engine.get(
            f"/v1/events/{event_id}/runs")[1]["data"]] == ["cat-report"]
        assert done[0]["output"] == "report"

        status, body = engine.call("DELETE", "/v1/functions/cat-report")
        assert status == 200 and body["data"] == {"id": "cat-report", "status": "removed"}
        wait_for(lambda: engine.get("/v1/functions/cat-report")[0] == 404, 30,
                 "cat-report removed")
        code, out, _ = run_cli(capsys, "functions", "list", "--api", engine.base)
        assert code == 0 and "cat-" not in out
    finally:
        client.close()
