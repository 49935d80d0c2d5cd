"""The README's path: `stepstream dev --app examples.shop:client` starts its own dev
broker, engine, HTTP API and worker; events go in over Inngest's HTTP API and the CLI;
runs come out over the API and `stepstream runs`.

This is the one test that starts a second broker: starting it is what it tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from engine.devbroker import free_port
from tests.integration.harness import ROOT, wait_for

pytestmark = pytest.mark.kafka


def call(port: int, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else
                                      json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, str]]]:
    tmp_path = tmp_path_factory.mktemp("dev")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("STEPSTREAM_BROKERS", "KAFKA_BOOTSTRAP_SERVERS")}
    env["PYTHONPATH"] = str(ROOT)
    env["STEPSTREAM_API"] = f"http://127.0.0.1:{port}"
    log = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "dev", "--app", "examples.shop:client",
         "--port", str(port), "--broker-port", str(free_port()),
         "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    # The example module lives in the repository; the dev command runs from tmp_path
    # so its .stepstream/ files land there.
    try:
        def up() -> bool:
            try:
                status, fns = call(port, "/v1/functions")
            except (urllib.error.URLError, ConnectionError):
                return False
            return status == 200 and any(f["id"] == "shop-process-order" for f in fns["data"])
        wait_for(up, 90, "stepstream dev to serve the example app")
        env["STEPSTREAM_BROKERS"] = (tmp_path / ".stepstream" / "dev-broker").read_text().strip()
        yield port, env
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(60) == 0, (tmp_path / "dev.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert not (tmp_path / ".stepstream" / "dev-broker").exists()


def test_dev_runs_the_example_over_http_and_cli(dev: tuple[int, dict[str, str]]) -> None:
    port, env = dev
    status, body = call(port, "/e/any-key", {"name": "shop/order.created",
                                             "data": {"order_id": 7, "total": 12.5}})
    assert status == 200 and body["status"] == 200
    [event_id] = body["ids"]

    def finished() -> dict[str, Any] | None:
        _, runs = call(port, f"/v1/events/{event_id}/runs")
        done = [r for r in runs["data"] if r["status"] in ("Completed", "Failed")]
        return done[0] if done else None
    run = wait_for(finished, 90, "the example run to finish")
    assert run["status"] == "Completed", run
    assert run["output"] == {"charge": "ch_7", "a": "reserved", "b": "booked"}
    assert run["function_id"] == "shop-process-order" and run["event_id"] == event_id
    assert run["started_at"] and run["ended_at"]

    status, single = call(port, f"/v1/runs/{run['run_id']}")
    assert status == 200 and single["data"]["run_id"] == run["run_id"]

    # The CLI: send an event, list runs, show the timeline.
    cli = [sys.executable, "-m", "engine"]
    sent = subprocess.run([*cli, "send", "shop/order.created", '{"order_id": 8, "total": 3}'],
                          env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert sent.returncode == 0, sent.stderr
    listed = subprocess.run([*cli, "runs", "list"], env=env, capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert listed.returncode == 0 and run["run_id"] in listed.stdout
    shown = subprocess.run([*cli, "runs", "show", run["run_id"]], env=env, capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert shown.returncode == 0 and "cool-off" in shown.stdout


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "JSON"),
    ({"data": {}}, 400, "name"),
    ({"name": "x", "data": {"blob": "x" * 600_000}}, 413, "limit"),
])
def test_bad_http_requests_get_a_4xx_with_a_message(dev: tuple[int, dict[str, str]],
                                                     body: Any, status: int,
                                                     fragment: str) -> None:
    port, _ = dev
    got, answer = call(port, "/e/key", body)
    assert got == status and fragment in answer["error"]
    assert call(port, "/v1/runs/NOPE")[0] == 404
