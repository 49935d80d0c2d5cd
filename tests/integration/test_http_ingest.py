"""The event API on the real broker: Inngest's id seed makes a retried request
idempotent, and the API stays responsive while it handles a maximal request."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine.api.event_body import MAX_EVENTS_PER_REQUEST, SEED_HEADER
from engine.api.views import RunFilter
from engine.cli.devbroker import free_port
from tests.integration.harness import ServedApi, Stack, app_stack, wait_for
from topics.settings import Settings

pytestmark = pytest.mark.kafka


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="http", settings=settings)

    @client.create_function(fn_id="echo", trigger=sdk.TriggerEvent(event="http/echo"))
    async def echo(ctx: sdk.Context) -> Any:
        return ctx.event.data

    return client


class ApiThread(ServedApi):
    """The HTTP API in dev mode, from its own thread and event loop."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack, dev=True)


def post(url: str, body: Any, headers: dict[str, str] | None = None,
         timeout: float = 60) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app_stack(broker, tmp_path_factory.mktemp("http"), make_client, ["http-echo"]) as s:
        yield s


def test_a_retried_request_with_the_same_seed_gets_the_same_ids_and_one_run(
        stack: Stack) -> None:
    api = ApiThread(stack)
    try:
        seed = f"{int(time.time() * 1000)},{base64.b64encode(os.urandom(10)).decode()}"
        marker = os.urandom(6).hex()
        body = [{"name": "http/echo", "data": {"marker": marker, "n": 1}},
                {"name": "http/echo", "data": {"marker": marker, "n": 2}}]
        # An SDK whose first attempt got a 5xx or lost the connection sends it again.
        first = post(f"{api.url}/e/k", body, {SEED_HEADER: seed})
        again = post(f"{api.url}/e/k", body, {SEED_HEADER: seed})
        assert first[0] == again[0] == 200, (first, again)
        ids = first[1]["ids"]
        assert again[1]["ids"] == ids and len(set(ids)) == 2
        runs = [stack.finished_run(i) for i in ids]
        assert [r["output"] for r in runs] == [b["data"] for b in body]

        # Without the seed the same body is two new events.
        other = post(f"{api.url}/e/k", body)[1]["ids"]
        assert not set(other) & set(ids)
        for i in other:
            stack.finished_run(i)

        def runs_with_marker() -> list[dict[str, Any]]:
            assert stack.engine is not None
            found = stack.engine.queries.list_runs(100, None, RunFilter(function="http-echo"))
            return [r for r in found if r["event"]["data"].get("marker") == marker]
        # Four runs: the retried request started its two only once.
        assert sorted(r["event"]["id"] for r in runs_with_marker()) == sorted(ids + other)
    finally:
        api.close()


# Probes /health every 10 ms until its stdin closes, then prints the latencies: a
# process of its own, so the test's own threads cannot slow the probe down.
PROBE = """
import json, sys, threading, time, urllib.request
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
latencies = []
while not done.is_set():
    started = time.perf_counter()
    with urllib.request.urlopen(sys.argv[1] + "/health", timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "ok"
    latencies.append(time.perf_counter() - started)
    time.sleep(0.01)
print(json.dumps(latencies))
"""


def test_health_answers_within_100ms_while_a_maximal_request_is_handled(
        broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real command, engine and API in one process, as users run it, on topics of
    # its own.
    monkeypatch.setenv("STEPSTREAM_EVENT_KEYS", "ev-key")
    stack = Stack(broker, tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        stack.spawn("engine", "--port", str(port), "--state-dir", str(tmp_path / "state"),
                    "--no-create-topics", log="engine")

        def up() -> bool:
            try:
                return bool(Stack.api_at(port, "/health")["status"] == "ok")
            except (urllib.error.URLError, ConnectionError):
                return False
        wait_for(up, 60, "the engine's API")

        # As many events as one request may hold, as dense JSON (the slowest kind to
        # decode: the C decoder holds the GIL for the whole body, and validating 5,000
        # events is seconds of Python; both used to run on the event loop).
        rows = [[j, "abcdefgh", 1.5, True, None] for j in range(40)]
        body = [{"name": "http/bulk", "data": {"i": i, "rows": rows}}
                for i in range(MAX_EVENTS_PER_REQUEST)]
        probe = subprocess.Popen([sys.executable, "-c", PROBE, url], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            started = time.perf_counter()
            status, answer = post(f"{url}/e/ev-key", body, timeout=120)
            seconds = time.perf_counter() - started
        finally:
            out, _ = probe.communicate("", timeout=30)
        assert status == 200, answer
        assert len(set(answer["ids"])) == MAX_EVENTS_PER_REQUEST
        latencies = sorted(json.loads(out))
        print(f"maximal request: {len(json.dumps(body)) / 2**20:.1f} MiB, {seconds:.1f} s; "
              f"/health: {len(latencies)} probes, median "
              f"{latencies[len(latencies) // 2] * 1000:.1f} ms, "
              f"max {latencies[-1] * 1000:.1f} ms")
        assert len(latencies) >= 10, "the request was too quick to measure anything"
        # 95 of 100 probes under 100 ms, and none held up: on 2 shared cores a probe is now
        # and then not scheduled for 60-90 ms whatever the API does, while the stall this
        # guards against held every probe for seconds (2.6 s measured with decoding back
        # on the event loop).
        assert latencies[int(len(latencies) * 0.95)] < 0.1, latencies[-10:]
        assert latencies[-1] < 1.0, latencies[-5:]

        # One over the limit is refused with a message.
        status, answer = post(f"{url}/e/ev-key", body[:1] * (MAX_EVENTS_PER_REQUEST + 1))
        assert status == 413 and "limit of 5000" in answer["error"]
    finally:
        stack.close()
