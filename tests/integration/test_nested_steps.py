"""A step called inside another step's handler fails the run on the real broker, even
when user code wraps it in ``except Exception``."""

from __future__ import annotations

from pathlib import Path

import pytest

import sdk
from tests.integration.harness import app_stack
from topics.settings import Settings

pytestmark = pytest.mark.kafka


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="nesting", settings=settings)

    @client.create_function(fn_id="nests", trigger=sdk.TriggerEvent(event="nesting/go"))
    async def nests(ctx: sdk.Context) -> str:
        async def outer() -> str:
            try:
                return str(await ctx.step.run("inner", lambda: "inner ran"))
            except Exception:
                return "swallowed"
        return str(await ctx.step.run("outer", outer))

    return client


def test_nested_step_fails_the_run_naming_both_steps(broker: str, tmp_path: Path) -> None:
    with app_stack(broker, tmp_path, make_client, ["nesting-nests"]) as stack:
        run = stack.finished_run(stack.send("nesting/go", {}))
    assert run["status"] == "failed", run
    error = run["error"]
    assert (error["name"], error["code"]) == ("NestedStepError", "step_nested"), error
    assert "'inner'" in error["message"] and "'outer'" in error["message"], error
    # Failed for good on the first attempt: retrying would nest again.
    assert [e["type"] for e in run["timeline"]].count("task.dispatched") == 1, run["timeline"]
