"""The benchmark's run probe tells "the engine holds no such run" (404) from failures
that say nothing of the run (5xx, a timeout, nothing listening)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from bench.runs import NOT_FOUND, probe_run
from engine.cli.devbroker import free_port

ANSWERS = {"/v1/runs/gone": (404, {"error": "no such run", "status": 404}),
           "/v1/runs/broken": (500, {"error": "boom", "status": 500}),
           "/v1/runs/done": (200, {"data": {"status": "Completed",
                                            "timeline": [{"type": "function.completed"}]}})}
RELEASE = threading.Event()  # set when the test's server stops


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/v1/runs/slow":
            RELEASE.wait(5)
            return  # the probe timed out and hung up: answering would hit a closed socket
        code, body = ANSWERS.get(self.path, (200, {}))
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    from http.server import ThreadingHTTPServer

    server: HTTPServer = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    RELEASE.clear()
    yield server.server_address[1]
    RELEASE.set()
    server.shutdown()
    server.server_close()


def test_a_404_is_not_found(port: int) -> None:
    assert probe_run(port, "gone") == NOT_FOUND


def test_a_found_run_says_its_status(port: int) -> None:
    assert probe_run(port, "done") == "Completed (last: function.completed)"


def test_other_failures_are_errors_not_not_found(port: int) -> None:
    assert probe_run(port, "broken") == "error (HTTP 500)"
    assert probe_run(port, "slow", timeout=0.2).startswith("error (")
    assert probe_run(port, "not-a-run").startswith("error (KeyError")
    assert probe_run(free_port(), "any").startswith("error (")
