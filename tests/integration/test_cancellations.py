"""Bulk cancel over HTTP on the real broker: ``POST /v1/cancellations`` cancels exactly
the queued and running runs its filter and CEL ``if`` match, and ``GET`` lists it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import sdk
from tests.integration.harness import API_KEY, ROOT, Api, Stack, wait_for

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def setup(broker: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Stack, Api]]:
    tmp = tmp_path_factory.mktemp("cancellations")
    stack = Stack(broker, tmp)
    client = sdk.Client(app_id="bulk", settings=stack.settings)

    @client.create_function(fn_id="hold", trigger=sdk.TriggerEvent(event="bulk/hold"))
    async def hold(ctx: sdk.Context) -> Any:
        return await ctx.step.wait_for_event("release", event="bulk/release",
                                             timeout="1h")

    @client.create_function(fn_id="other", trigger=sdk.TriggerEvent(event="bulk/hold"))
    async def other(ctx: sdk.Context) -> Any:
        return await ctx.step.wait_for_event("release", event="bulk/release",
                                             timeout="1h")
    try:
        api = Api(stack, tmp)
        stack.client = client
        stack.start_worker(client)
        wait_for(lambda: {"bulk-hold", "bulk-other"} <= api.function_ids(), 60,
                 "the functions registered")
        yield stack, api
    finally:
        stack.close()
        client.close()


def waiting_runs(api: Api, fn_id: str, n: int) -> list[dict[str, Any]]:
    def all_waiting() -> list[dict[str, Any]] | None:
        runs = api.runs(function=fn_id)
        ok = [r for r in runs if (r.get("waiting") or {}).get("kind") == "event"]
        return ok if len(ok) >= n else None
    return wait_for(all_waiting, 60, f"{n} runs of {fn_id} waiting")


def test_bulk_cancel_matches_function_and_if_and_leaves_the_rest(
        setup: tuple[Stack, Api]) -> None:
    stack, api = setup
    n_of = {stack.send("bulk/hold", {"n": n}): n for n in range(6)}
    holds = waiting_runs(api, "bulk-hold", 6)
    waiting_runs(api, "bulk-other", 6)

    # No filter: refused, nothing cancelled.
    status, body = api.post("/v1/cancellations", {})
    assert status == 400 and "no filter" in body["error"]
    # A dry run counts and lists, and cancels nothing.
    status, dry = api.post("/v1/cancellations", {"function_id": "bulk-hold",
                                                 "if": "event.data.n >= 3", "dry_run": True})
    assert status == 200, dry
    expected = {r["run_id"] for r in holds if n_of[r["event_id"]] >= 3}
    assert dry["matched"] == 3 and set(dry["run_ids"]) == expected

    status, made = api.post("/v1/cancellations", {"app_id": "bulk", "function_id": "bulk-hold",
                                                  "if": "event.data.n >= 3",
                                                  "reason": "bad batch"})
    assert status == 200, made
    assert made["matched"] == 3 and made["function_id"] == "bulk-hold" and not made["more"]

    def settled() -> dict[str, str] | None:
        runs = {r["run_id"]: r for r in api.runs(function="bulk-hold")}
        done = {rid: runs[rid]["status"] for rid in runs}
        return done if all(done[rid] == "Cancelled" for rid in expected) else None
    statuses = wait_for(settled, 30, "the matched runs cancelled")
    assert {rid for rid, s in statuses.items() if s == "Cancelled"} == expected
    status, one = api.get(f"/v1/runs/{sorted(expected)[0]}")
    assert f"cancellation {made['id']}: bad batch" in one["data"]["cancelled_by"]["reason"]
    # The other function's runs and the unmatched ones still wait.
    assert all(r["status"] == "Running" for r in api.runs(function="bulk-other"))

    status, listed = api.get("/v1/cancellations")
    assert status == 200 and listed["data"][0]["id"] == made["id"]
    assert listed["data"][0]["matched"] == 3 and listed["data"][0]["if"] == "event.data.n >= 3"
    # The same request again matches nothing: those runs have ended.
    status, again = api.post("/v1/cancellations", {"function_id": "bulk-hold",
                                                   "if": "event.data.n >= 3"})
    assert status == 200 and again["matched"] == 0
    status, listed = api.get("/v1/cancellations?limit=1")
    assert [c["id"] for c in listed["data"]] == [again["id"]]
    assert api.get("/v1/cancellations?limit=0")[0] == 400


def cli(api: Api, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEPSTREAM_API": api.base, "STEPSTREAM_API_KEYS": API_KEY}
    return subprocess.run([sys.executable, "-m", "engine", "runs", "cancel", *argv], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_cli_counts_then_cancels_and_refuses_a_bulk_cancel_without_filter(
        setup: tuple[Stack, Api]) -> None:
    stack, api = setup
    for n in range(3):
        stack.send("bulk/hold", {"n": 100 + n})
    waiting = waiting_runs(api, "bulk-other", 3)
    refused = cli(api)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "--all" in refused.stderr
    both = cli(api, waiting[0]["run_id"], "--function", "bulk-other")
    assert both.returncode == 2 and "not both" in both.stderr

    dry = cli(api, "--function", "bulk-other", "--if", "event.data.n >= 100", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.strip() == "3 runs match", dry.stderr
    assert {r["status"] for r in api.runs(function="bulk-other")} == {"Running"}
    done = cli(api, "--function", "bulk-other", "--if", "event.data.n >= 100")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith("cancelling 3 runs: cancellation ")
    wait_for(lambda: sum(r["status"] == "Cancelled"
                         for r in api.runs(function="bulk-other")) == 3,
             30, "three runs of bulk-other cancelled")
