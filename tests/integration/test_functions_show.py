"""``GET /v1/functions/{id}`` and ``stepstream functions show`` on the real broker: a
function's config, and per concurrency key the runs that hold a slot and the runs that
wait, while steps are held open by the test (issue 10)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine import cli
from engine.cli.devbroker import free_port
from tests.integration.harness import API_KEY, Stack, wait_for

pytestmark = pytest.mark.kafka
APP = "tests.integration.apps.gated:client"
FN = "gated-held"


def get(base: str, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {API_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def healthy(base: str) -> bool:
    try:
        return get(base, "/health")[0] == 200
    except OSError:
        return False


def counts(base: str) -> dict[str | None, tuple[int, int]]:
    """(running, queued) per key of the function's concurrency gates, from the API."""
    status, body = get(base, f"/v1/functions/{FN}")
    assert status == 200, body
    state = body["data"]["flow_state"]
    assert state["truncated"] is False
    return {e["key"]: (e["running"], e["queued"]) for e in state["concurrency"]}


def started(ledger: Path) -> list[str]:
    """The keys of the steps that began executing, from the app's ledger."""
    if not ledger.exists():
        return []
    return sorted(line.split()[1] for line in ledger.read_text().splitlines())


def show(capsys: pytest.CaptureFixture[str], base: str, *extra: str) -> str:
    code = cli.main(["functions", "show", FN, "--api", base, *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def table_rows(out: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")] for line in out.splitlines()
            if "│" in line]


def test_functions_show_counts_running_and_queued_runs_per_key(
        broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    release, ledger = tmp_path / "release", tmp_path / "ledger"
    monkeypatch.setenv("STEPSTREAM_TEST_RELEASE", str(release))
    monkeypatch.setenv("STEPSTREAM_TEST_LEDGER", str(ledger))
    monkeypatch.setenv("STEPSTREAM_API_KEYS", API_KEY)  # the CLI sends the engine's key
    stack = Stack(broker, tmp_path)
    sender = stack.client = sdk.Client(app_id="sender", settings=stack.settings)
    try:
        base = f"http://127.0.0.1:{free_port()}"
        stack.spawn("engine", "--port", base.rsplit(":", 1)[1], "--state-dir",
                    str(tmp_path / "engine"), "--no-create-topics", log="engine")
        wait_for(lambda: healthy(base), 60, "the engine's API")
        stack.spawn("worker", APP, "--concurrency", "10", log="worker")
        wait_for(lambda: get(base, f"/v1/functions/{FN}")[0] == 200, 60,
                 "the function registered")

        events = [stack.send("gated/held", {"k": k}) for k in "aaab"]
        wait_for(lambda: counts(base) == {"a": (1, 2), "b": (1, 0)}, 60,
                 "a: 1 running, 2 queued; b: 1 running")
        # What really executes agrees: one step of each key began, no more.
        wait_for(lambda: started(ledger) == ["a", "b"], 30, "the steps of a and b")
        assert counts(base) == {"a": (1, 2), "b": (1, 0)}
        assert started(ledger) == ["a", "b"]

        body = get(base, f"/v1/functions/{FN}")[1]["data"]
        assert body["flow"] == {"concurrency": [{"limit": 1, "key": "event.data.k",
                                                 "scope": "fn", "mode": "step"}]}
        assert body["flow_state"]["concurrency"] == [
            {"key": "a", "scope": "fn", "running": 1, "queued": 2, "limit": 1},
            {"key": "b", "scope": "fn", "running": 1, "queued": 0, "limit": 1}]
        assert body["flow_state"]["partitions"] == stack.settings.partitions

        out = show(capsys, base)
        assert f"function {FN}" in out and "concurrency 1 per key event.data.k" in out
        assert table_rows(out) == [["concurrency", "a", "1", "2", "1", ""],
                                  ["concurrency", "b", "1", "0", "1", ""]]
        as_json = json.loads(show(capsys, base, "--json"))
        assert as_json["flow_state"]["concurrency"] == body["flow_state"]["concurrency"]

        release.touch()

        def all_completed() -> bool:
            runs = [get(base, f"/v1/events/{e}/runs")[1]["data"] for e in events]
            return all(r and r[0]["status"] == "Completed" for r in runs)
        wait_for(all_completed, 60, "every run completed")
        # Idle gates are deleted: no key is listed once nothing runs or waits.
        wait_for(lambda: counts(base) == {}, 30, "the gates gone")
        assert started(ledger) == ["a", "a", "a", "b"]
        out = show(capsys, base)
        assert "no run holds or waits for a flow-control gate" in out
        assert table_rows(out) == []
    finally:
        stack.close()
        sender.close()
