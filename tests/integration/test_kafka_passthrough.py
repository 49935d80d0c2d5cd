"""librdkafka settings from STEPSTREAM_KAFKA_* reach every client — the CLI's, the
engine's and a worker's — as librdkafka itself reports its configuration (``debug=conf``),
with secrets redacted; a bad one is one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.devbroker import free_port
from tests.integration.harness import ROOT, Stack, terminate, wait_for

pytestmark = pytest.mark.kafka

PASSTHROUGH = {"STEPSTREAM_KAFKA_CLIENT_RACK": "rack-7", "STEPSTREAM_KAFKA_DEBUG": "conf",
               # Unused over PLAINTEXT, but a secret: librdkafka must show it redacted.
               "STEPSTREAM_KAFKA_SASL_PASSWORD": "hunter2-secret"}


def env_for(stack: Stack, **extra: str) -> dict[str, str]:
    return {**stack.env(), **PASSTHROUGH, **extra}


def cli(stack: Stack, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *argv], env=env_for(stack, **extra),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_settings_reach_the_cli_engine_and_worker_clients(broker: str, tmp_path: Path
                                                          ) -> None:
    stack = Stack(broker, tmp_path)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        sent = cli(stack, "send", "pt/ping", '{"n": 1}')
        assert sent.returncode == 0, sent.stderr[-2000:]
        for name, argv in (("engine", ["engine", "--port", str(free_port()), "--state-dir",
                                       str(tmp_path / "state"), "--no-create-topics"]),
                           ("worker", ["-vv", "worker", "examples.shop:client"])):
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                procs.append((subprocess.Popen([sys.executable, "-m", "engine", *argv],
                                               env=env_for(stack), cwd=ROOT, stdout=out,
                                               stderr=subprocess.STDOUT), log))
        for proc, log in procs:
            wait_for(lambda log=log: "client.rack = rack-7" in log.read_text(errors="replace"),
                     60, f"librdkafka's configuration in {log.name}")
            assert proc.poll() is None, log.read_text()[-2000:]
        outputs = [sent.stderr] + [log.read_text(errors="replace") for _, log in procs]
        for text in outputs:
            assert "client.rack = rack-7" in text
            assert "sasl.password = [redacted]" in text
            assert "hunter2" not in text
    finally:
        for proc, _ in procs:
            terminate(proc, 30)
        stack.close()


def test_a_bad_setting_is_one_line_and_exit_2_and_a_real_one_takes_effect(
        broker: str, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path)
    bad = cli(stack, "send", "pt/ping", STEPSTREAM_KAFKA_SASL_MECHANISMZ="PLAIN",
              STEPSTREAM_KAFKA_DEBUG="")
    assert bad.returncode == 2
    [line] = bad.stderr.strip().splitlines()
    assert 'No such configuration property: "sasl.mechanismz"' in line
    # TLS against the plaintext dev broker: the client cannot talk to it, so the setting
    # did reach it.
    tls = cli(stack, "send", "pt/ping", STEPSTREAM_KAFKA_SECURITY_PROTOCOL="SSL",
              STEPSTREAM_KAFKA_DEBUG="")
    assert tls.returncode == 2, tls.stdout + tls.stderr
    assert "cannot reach the broker" in tls.stderr
