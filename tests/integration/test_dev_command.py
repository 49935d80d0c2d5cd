"""The README's path: `stepstream dev --app examples.shop:client` starts its own dev
broker, engine, HTTP API and worker; events go in over Inngest's HTTP API and the CLI;
runs come out over the API and `stepstream runs`.

This is the one test that starts a second broker: starting it is what it tests."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from engine.cli.devbroker import free_port
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


@dataclass
class Dev:
    port: int
    folder: Path
    # For clients: no STEPSTREAM_* variables, and a $HOME of the test's own, so the
    # per-user files neither come from nor reach anyone else's `stepstream dev`.
    env: dict[str, str]
    broker: str = ""
    log: Path = field(default_factory=Path)

    def cli(self, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "engine", *args], env=self.env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)


def dev_command(port: int, broker_port: int, state: Path) -> list[str]:
    return [sys.executable, "-m", "engine", "dev", "--app", "examples.shop:client",
            "--port", str(port), "--broker-port", str(broker_port), "--state-dir", str(state)]


@contextmanager
def running_dev(tmp_path: Path, *extra: str) -> Iterator[Dev]:
    """`stepstream dev` on the example app, in ``tmp_path``, until the block ends (then
    stopped with Ctrl-C, which must leave no per-user or per-folder files behind)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTREAM_")
           and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(tmp_path / "home")
    info = Dev(port, tmp_path, env, log=tmp_path / "dev.log")
    log = info.log.open("wb")
    proc = subprocess.Popen([*dev_command(port, free_port(), tmp_path / "state"), *extra],
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
        info.broker = (tmp_path / ".stepstream" / "dev-broker").read_text().strip()
        yield info
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(60) == 0, info.log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    for name in ("dev-broker", "dev-api"):
        assert not (tmp_path / ".stepstream" / name).exists()
        assert not (tmp_path / "home" / ".stepstream" / name).exists()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    with running_dev(tmp_path_factory.mktemp("dev")) as info:
        yield info


def test_dev_runs_the_example_over_http_and_cli(dev: Dev) -> None:
    port = dev.port
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

    # The CLI, configured explicitly: send an event, list runs, show the timeline.
    env = {**dev.env, "STEPSTREAM_BROKERS": dev.broker,
           "STEPSTREAM_API": f"http://127.0.0.1:{port}"}
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


def runs_of(port: int, event_id: str) -> list[dict[str, Any]]:
    status, runs = call(port, f"/v1/events/{event_id}/runs")
    assert status == 200, runs
    return list(runs["data"])


def test_the_cli_finds_dev_on_its_port_from_a_sub_folder_and_from_anywhere(
        dev: Dev, tmp_path: Path) -> None:
    # No STEPSTREAM_BROKERS or STEPSTREAM_API: the broker and the API (on a port that is
    # not the default) are found upward from a sub-folder, and from an unrelated folder
    # through the per-user files.
    sub = dev.folder / "src" / "pkg"
    sub.mkdir(parents=True, exist_ok=True)
    for cwd in (sub, tmp_path):
        sent = dev.cli("send", "shop/order.created", '{"order_id": 9, "total": 1}', cwd=cwd)
        assert sent.returncode == 0, sent.stderr
        event_id = sent.stdout.strip()
        [run] = wait_for(lambda: runs_of(dev.port, event_id), 60, "a run of the event")  # noqa: B023
        listed = dev.cli("runs", "list", "--limit", "100", cwd=cwd)
        assert listed.returncode == 0, listed.stderr
        assert run["run_id"] in listed.stdout


def test_the_banners_example_event_starts_a_run(dev: Dev, tmp_path: Path) -> None:
    banner = dev.log.read_text()
    [send_line] = [line.strip() for line in banner.splitlines()
                   if line.strip().startswith("stepstream send ")]
    [curl_line] = [line.strip() for line in banner.splitlines()
                   if line.strip().startswith("curl ")]
    sent = dev.cli(*shlex.split(send_line)[1:], cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: runs_of(dev.port, sent.stdout.strip()), 60, "a run of the send line")
    words = shlex.split(curl_line)
    url, body = words[words.index("-X") + 2], words[words.index("-d") + 1]
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        [event_id] = json.loads(resp.read())["ids"]
    wait_for(lambda: runs_of(dev.port, event_id), 60, "a run of the curl line")


def test_a_second_dev_leaves_the_running_one_alone(dev: Dev, tmp_path: Path) -> None:
    marker = dev.folder / "state" / ".stepstream-dev-state"
    assert marker.exists()
    address_file = dev.folder / ".stepstream" / "dev-broker"
    # Same folder, other ports: refused by the lock, before anything is touched.
    started = time.monotonic()
    second = subprocess.run(dev_command(free_port(), free_port(), dev.folder / "state"),
                            cwd=dev.folder, env=dev.env, capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 2, second.stdout + second.stderr
    assert time.monotonic() - started < 10
    [line] = second.stderr.strip().splitlines()
    assert "stepstream dev is already running in this folder" in line
    assert f"api http://127.0.0.1:{dev.port}" in line
    # Another folder, the same API port: refused before its state folder is created.
    other = tmp_path / "other"
    other.mkdir()
    third = subprocess.run(dev_command(dev.port, free_port(), other / "state"), cwd=other,
                           env=dev.env, capture_output=True, text=True, timeout=60)
    assert third.returncode == 2, third.stdout + third.stderr
    [line] = third.stderr.strip().splitlines()
    assert f"port {dev.port} on 127.0.0.1 is in use" in line
    assert not (other / "state").exists()
    # The first one is untouched and still runs functions.
    assert marker.exists() and address_file.read_text().strip() == dev.broker
    status, body = call(dev.port, "/e/k", {"name": "shop/order.created",
                                           "data": {"order_id": 11, "total": 2}})
    assert status == 200
    wait_for(lambda: runs_of(dev.port, body["ids"][0]), 60, "a run after the refused starts")


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "JSON"),
    ({"data": {}}, 400, "name"),
    ({"name": "x", "data": {"blob": "x" * 600_000}}, 413, "limit"),
])
def test_bad_http_requests_get_a_4xx_with_a_message(dev: Dev, body: Any, status: int,
                                                     fragment: str) -> None:
    port = dev.port
    got, answer = call(port, "/e/key", body)
    assert got == status and fragment in answer["error"]
    assert call(port, "/v1/runs/NOPE")[0] == 404


def test_the_terminal_shows_failed_and_cancelled_runs_and_function_logs(dev: Dev) -> None:
    # Order 0 does not exist: validate raises NonRetriableError, so the run fails.
    _, sent = call(dev.port, "/e/k", {"name": "shop/order.created",
                                      "data": {"order_id": 0, "total": 1}})
    [bad] = wait_for(lambda: [r for r in runs_of(dev.port, sent["ids"][0])
                              if r["status"] == "Failed"], 60, "the run of order 0 to fail")
    # Order 12 sleeps 2 s in cool-off, after charging (which logs a line); cancel it there.
    _, sent = call(dev.port, "/e/k", {"name": "shop/order.created",
                                      "data": {"order_id": 12, "total": 1}})

    def sleeping() -> dict[str, Any] | None:
        runs = runs_of(dev.port, sent["ids"][0])
        return next((r for r in runs if "cool-off" in json.dumps(r.get("waiting"))), None)
    run = wait_for(sleeping, 60, "order 12 to sleep in cool-off")
    status, _ = call(dev.port, f"/v1/runs/{run['run_id']}/cancel", {"reason": "test"})
    assert status in (200, 202)

    def lines() -> dict[str, str] | None:
        text = dev.log.read_text()
        want = {"failed": bad["run_id"], "cancelled": run["run_id"], "log": run["run_id"]}
        found = {kind: next((ln for ln in text.splitlines()
                             if f"  {kind} " in ln and rid in ln), "")
                 for kind, rid in want.items()}
        return found if all(found.values()) else None
    found = wait_for(lines, 30, "the dev terminal's lines")
    assert "shop-process-order" in found["failed"] and "does not exist" in found["failed"]
    assert "through the API: test" in found["cancelled"]
    assert "order 12 charged: ch_12" in found["log"]
    # The validate step's own line says it is not retried; no traceback is printed.
    assert "step 'validate' failed, not retriable" in dev.log.read_text()
    assert "Traceback" not in dev.log.read_text()


def test_dev_quiet_prints_neither_run_lines_nor_function_logs(tmp_path: Path) -> None:
    # The same two runs as above: one fails, one logs through ctx.logger and completes.
    with running_dev(tmp_path, "--quiet") as dev:
        _, failing = call(dev.port, "/e/k", {"name": "shop/order.created",
                                             "data": {"order_id": 0, "total": 1}})
        _, logging_ = call(dev.port, "/e/k", {"name": "shop/order.created",
                                              "data": {"order_id": 12, "total": 1}})
        def ended_as(event_id: str, status: str) -> dict[str, Any] | None:
            return next((r for r in runs_of(dev.port, event_id) if r["status"] == status),
                        None)
        ended = [wait_for(partial(ended_as, failing["ids"][0], "Failed"), 60,
                          "the run of order 0 to fail"),
                 wait_for(partial(ended_as, logging_["ids"][0], "Completed"), 60,
                          "the run of order 12 to complete")]
    text = dev.log.read_text()  # stopped: everything it would print is printed
    assert "stepstream dev" in text and "Ctrl-C stops everything." in text
    assert "--quiet silences them" not in text
    for run in ended:
        assert run["run_id"] not in text
    assert "order 12 charged" not in text
