"""Re-run on the real broker, one and in bulk, over the HTTP API and the CLI: one engine,
one worker and one API for the module.

The app fails a run while the test keeps its key in ``FAILING`` (the "bug"), and
writes every step execution to ``LEDGER``, so the tests can fix the bug between the
original and the re-run and count side effects.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import sdk
from engine.api.views import RunFilter
from engine.cli.commands import main as cli
from engine.clock import now_ms
from tests.integration.harness import Stack, app_stack, wait_for
from tests.integration.test_http_ingest import ApiThread, post
from topics.settings import Settings

pytestmark = pytest.mark.kafka

FAILING: set[str] = set()
LEDGER: Counter[tuple[str, str]] = Counter()
_lock = threading.Lock()
TERMINAL = ("completed", "failed", "cancelled")


def ledger(key: str, step: str) -> None:
    with _lock:
        LEDGER[(key, step)] += 1


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="rr", settings=settings)

    async def three_steps(ctx: sdk.Context) -> dict[str, Any]:
        key = str(ctx.event.data["k"])

        def a() -> str:
            ledger(key, "a")
            return f"a-{key}"

        def b() -> str:
            ledger(key, "b")
            if key in FAILING:
                raise sdk.NonRetriableError(f"bug for {key}")
            return "b"

        def c() -> str:
            ledger(key, "c")
            return "c"

        return {"a": await ctx.step.run("a", a), "b": await ctx.step.run("b", b),
                "c": await ctx.step.run("c", c)}

    client.create_function(fn_id="steps", retries=0,
                           trigger=sdk.TriggerEvent(event="rr/go"))(three_steps)
    client.create_function(fn_id="bulk", retries=0,
                           trigger=sdk.TriggerEvent(event="rr/bulk"))(three_steps)

    @client.create_function(fn_id="batched", trigger=sdk.TriggerEvent(event="rr/batch"),
                            batch_events=sdk.Batch(max_size=3, timeout="30s"))
    async def batched(ctx: sdk.Context) -> list[str]:
        return [str(e.id) for e in ctx.events]

    @client.create_function(fn_id="doomed", retries=0,
                            trigger=sdk.TriggerEvent(event="rr/doomed"))
    async def doomed(ctx: sdk.Context) -> str:
        return "done"

    return client


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app_stack(broker, tmp_path_factory.mktemp("rerun"), make_client,
                   ["rr-steps", "rr-bulk", "rr-batched", "rr-doomed"]) as s:
        yield s


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[ApiThread]:
    a = ApiThread(stack)
    try:
        yield a
    finally:
        a.close()


def ended(stack: Stack, run_id: str, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        state = stack.run(run_id)
        return state if state is not None and state["status"] in TERMINAL else None
    return wait_for(done, timeout, f"run {run_id} to end")


def linked(stack: Stack, original: str, *reruns: str) -> dict[str, Any]:
    """The original once it lists every one of ``reruns`` (the link is folded there)."""
    def listed() -> dict[str, Any] | None:
        state = stack.run(original)
        return state if state and set(reruns) <= set(state.get("reruns") or []) else None
    return wait_for(listed, 30, f"run {original} to list its re-runs {reruns}")


def failed_run(stack: Stack, name: str = "rr/go") -> tuple[str, str]:
    """A run that fails at step b; its key and run id."""
    key = uuid.uuid4().hex[:10]
    FAILING.add(key)
    run = stack.finished_run(stack.send(name, {"k": key}))
    assert run["status"] == "failed" and "bug for" in run["error"]["message"]
    return key, run["run_id"]


def test_a_failed_run_re_run_after_the_fix_completes_linked_both_ways(
        stack: Stack, api: ApiThread) -> None:
    key, original = failed_run(stack)
    FAILING.discard(key)  # the fix is deployed
    status, body = post(f"{api.url}/v1/runs/{original}/rerun", {})
    assert status == 202 and set(body) == {"run_id", "rerun_of"}, body
    assert body["rerun_of"] == original and body["run_id"] != original
    new = ended(stack, body["run_id"])
    assert new["status"] == "completed" and new["output"] == {"a": f"a-{key}", "b": "b",
                                                              "c": "c"}
    assert stack.api_at(api.runner.addresses[0][1], f"/v1/runs/{body['run_id']}"
                        )["data"]["rerun_of"] == original
    linked(stack, original, body["run_id"])
    view = stack.api_at(api.runner.addresses[0][1], f"/v1/runs/{original}")["data"]
    assert view["reruns"] == [body["run_id"]] and view["status"] == "Failed"
    # Without --from-step every step ran again: a twice in all, once per run.
    assert LEDGER[(key, "a")] == 2 and LEDGER[(key, "c")] == 1


def test_from_step_keeps_the_earlier_steps_and_runs_the_rest(
        stack: Stack, api: ApiThread, capsys: pytest.CaptureFixture[str]) -> None:
    key, original = failed_run(stack)
    FAILING.discard(key)
    assert cli(["runs", "rerun", original, "--from-step", "b", "--api", api.url]) == 0
    new_id = capsys.readouterr().out.strip()
    new = ended(stack, new_id)
    assert new["status"] == "completed" and new["output"]["a"] == f"a-{key}"
    # a's side effect happened once in total: the re-run got its output from the memo.
    assert (LEDGER[(key, "a")], LEDGER[(key, "b")], LEDGER[(key, "c")]) == (1, 2, 1)
    assert new["rerun_of"] == original
    linked(stack, original, new_id)


def test_a_batch_run_is_re_run_with_all_its_events(stack: Stack, api: ApiThread) -> None:
    ids = [str(i) for i in stack.client.send_sync([sdk.Event(name="rr/batch", data={"n": n})
                                              for n in range(3)])]
    original = stack.finished_run(ids[0])
    assert original["output"] == ids
    status, body = post(f"{api.url}/v1/runs/{original['run_id']}/rerun", {})
    assert status == 202, body
    new = ended(stack, body["run_id"])
    assert new["status"] == "completed" and new["output"] == ids
    trigger = stack.api_at(api.runner.addresses[0][1], f"/v1/runs/{body['run_id']}/trigger")
    assert [e["id"] for e in trigger["data"]] == ids
    linked(stack, original["run_id"], body["run_id"])


def test_bulk_rerun_dry_run_then_real_and_refused_without_filter(
        stack: Stack, api: ApiThread, capsys: pytest.CaptureFixture[str]) -> None:
    since = now_ms()
    originals = dict(failed_run(stack, "rr/bulk") for _ in range(4))
    FAILING.difference_update(originals)
    args = ["runs", "rerun", "--function", "rr-bulk", "--status", "failed",
            "--since", str(since), "--api", api.url]

    assert cli([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "4 runs match" and sorted(out[1:]) == sorted(originals.values())

    assert cli(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "4 runs match" and out[-1] == "re-ran 4 of 4 runs"
    progress = [line for line in out if line.startswith("[")]
    assert len(progress) == 4 and {line.split()[1] for line in progress} == set(
        originals.values())
    new_ids = [line.split()[-1] for line in progress]
    for original, new_id in zip([line.split()[1] for line in progress], new_ids,
                                strict=True):
        assert ended(stack, new_id)["status"] == "completed"
        assert stack.run(new_id)["rerun_of"] == original  # type: ignore[index]
        linked(stack, original, new_id)
    # Nothing but the four re-runs started: the dry run started none.
    assert stack.engine is not None
    runs = stack.engine.queries.list_runs(100, None, RunFilter(function="rr-bulk"))
    assert len(runs) == 8

    # No filter at all: refused by the CLI (exit 2, one line) and by the API (400).
    assert cli(["runs", "rerun", "--api", api.url]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--all" in err
    status, body = post(f"{api.url}/v1/reruns", {"dry_run": True})
    assert status == 400 and "needs a filter" in body["error"]
    status, body = post(f"{api.url}/v1/reruns", {"all": True, "dry_run": True})
    assert status == 200 and body["matched"] >= 8


def test_cli_exit_codes(stack: Stack, api: ApiThread,
                        capsys: pytest.CaptureFixture[str]) -> None:
    run = stack.finished_run(stack.send("rr/doomed", {}))
    # An unknown run and an unknown step are bad arguments: 2, one line.
    assert cli(["runs", "rerun", "01NOSUCHRUN", "--api", api.url]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli(["runs", "rerun", run["run_id"], "--from-step", "zz", "--api", api.url]) == 2
    err = capsys.readouterr().err
    assert "has no step 'zz'" in err and err.count("\n") == 1
    assert cli(["runs", "rerun", run["run_id"], "--function", "x", "--api", api.url]) == 2
    capsys.readouterr()
    # A removed function cannot be re-run: 409, exit 1.
    assert stack.engine is not None
    asyncio.run_coroutine_threadsafe(api.ingest.remove_function("rr-doomed"),
                                     api.loop).result(30)
    wait_for(lambda: stack.engine is not None
             and stack.engine.queries.function("rr-doomed") is None, 30,
             "rr-doomed removed")
    assert cli(["runs", "rerun", run["run_id"], "--api", api.url]) == 1
    assert "no longer registered" in capsys.readouterr().err
