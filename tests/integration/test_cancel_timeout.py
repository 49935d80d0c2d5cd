"""``Cancel(timeout=)`` on the real broker: a rule applies only for its timeout after the
run was requested, measured by the engine's clock."""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import sdk
from tests.integration.harness import Stack, app_stack, wait_for
from topics.settings import Settings

pytestmark = pytest.mark.kafka


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="ct", settings=settings)

    @client.create_function(fn_id="short-rule", trigger=sdk.TriggerEvent(event="ct/start"),
                            cancel=[sdk.Cancel(event="ct/stop", match="data.job",
                                               timeout="3s")])
    async def short_rule(ctx: sdk.Context) -> str:
        await ctx.step.sleep("nap", datetime.timedelta(seconds=7))
        return "done"

    @client.create_function(fn_id="long-rule", trigger=sdk.TriggerEvent(event="ct/start"),
                            cancel=[sdk.Cancel(event="ct/stop", match="data.job",
                                               timeout="60s")])
    async def long_rule(ctx: sdk.Context) -> str:
        await ctx.step.sleep("nap", datetime.timedelta(seconds=60))
        return "never"

    return client


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    with app_stack(broker, tmp_path, make_client, ["ct-short-rule", "ct-long-rule"]) as s:
        yield s


def test_cancel_event_after_the_rule_timeout_does_not_cancel(stack: Stack) -> None:
    job = uuid.uuid4().hex
    started = stack.send("ct/start", {"job": job})

    def both_sleeping() -> dict[str, dict] | None:
        runs = {r["fn_id"]: r for r in stack.runs_for(started)}
        if len(runs) == 2 and all((r.get("waiting") or {}).get("kind") == "timer"
                                  for r in runs.values()):
            return runs
        return None
    runs = wait_for(both_sleeping, 30, "both runs to sleep")
    requested = max(r["requested_at"] for r in runs.values())
    # The cancel event comes 5 s after the runs were requested: past the short rule's
    # 3 s, within the long rule's 60 s.
    wait_for(lambda: time.time() * 1000 >= requested + 5000, 10, "5 s to pass")
    stop = stack.send("ct/stop", {"job": job})

    long_run = runs["ct-long-rule"]["run_id"]
    cancelled = wait_for(lambda: (r := stack.run(long_run)) and r["status"] == "cancelled"
                         and r, 30, "the long rule to cancel its run")
    assert cancelled["cancelled_by"]["event_id"] == stop
    # The same event, matched before on the same waits partition, left the short run be.
    short_id = runs["ct-short-rule"]["run_id"]
    done = wait_for(lambda: (r := stack.run(short_id)) and r["status"] != "running" and r,
                    30, "the short rule's run to end")
    assert done["status"] == "completed" and done["output"] == "done", done["cancelled_by"]
