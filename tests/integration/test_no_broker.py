"""`stepstream send` and `stepstream worker` started outside the project, with the broker
they find not there: one line naming the address and how to set it, within seconds, and
a worker that stops on SIGTERM while it is still trying to connect. No broker needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli.devbroker import free_port
from tests.integration.harness import ROOT, wait_for


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    """A folder outside the project, and an environment whose only hint is the per-user
    file of a `stepstream dev` that is gone (its broker's port is closed)."""
    home, cwd = tmp_path / "home", tmp_path / "elsewhere"
    cwd.mkdir()
    dead = f"127.0.0.1:{free_port()}"
    (home / ".stepstream").mkdir(parents=True)
    (home / ".stepstream" / "dev-broker").write_text(dead + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTREAM_")
           and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    return cwd, env, dead


@pytest.mark.parametrize("args", [
    ["send", "shop/order.created", '{"order_id": 1, "total": 2}'],
    ["worker", "examples.shop:client"],
])
def test_an_unreachable_broker_is_one_line_within_seconds(
        outside: tuple[Path, dict[str, str], str], args: list[str]) -> None:
    cwd, env, dead = outside
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still running after 30 s; stderr starts "
                             f"{(exc.stderr or b'')[:300]!r}") from None
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert f"cannot reach the broker at {dead}" in lines[0]
    assert str(Path(env["HOME"]) / ".stepstream" / "dev-broker") in lines[0]
    assert "STEPSTREAM_BROKERS" in lines[0]
    assert took < 12, took


def test_a_worker_stops_on_sigterm_while_it_cannot_connect(
        outside: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    cwd, env, _ = outside
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "-v", "worker",
                                 "examples.shop:client"], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        # Its first output comes once it tries the broker (signal handlers installed).
        wait_for(lambda: log_path.stat().st_size > 0, 30, "the worker to try the broker")
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker ignored SIGTERM for 10 s: "
                                 + log_path.read_text()[-1000:]) from None
        assert time.monotonic() - started < 3
        assert code == 0, log_path.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
