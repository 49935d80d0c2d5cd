"""A stepstream stack on the session broker: topics under a fresh prefix, an engine
(in this process or as a child process) and workers (threads or child processes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

import sdk
from engine.api.http import make_app, start_server
from engine.api.ingest import EventIngest
from engine.app import Engine
from engine.cli.devbroker import free_port
from engine.cli.provision import ensure_topics
from topics.catalog import Catalog
from topics.codec import decode
from topics.records import DeadLetter
from topics.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# `stepstream engine` children need an API key; api_at() sends it.
API_KEY = "test-api-key"


def terminate(proc: subprocess.Popen[Any], timeout: float = 20) -> bool:
    """SIGTERM ``proc`` (if still running) and wait for it; kill it if it has not exited
    within ``timeout``. True if it exited on its own."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition",
             every: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Stack:
    def __init__(self, broker: str, tmp: Path, *, partitions: int = 4,
                 backoff_ms: int = 100) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.settings = Settings(brokers=broker, prefix=self.prefix, partitions=partitions,
                                 retry_backoff_base_ms=backoff_ms)
        self.catalog = Catalog(self.settings)
        self.tmp = tmp
        ensure_topics(self.settings)
        self.engine: Engine | None = None
        self.children: list[subprocess.Popen[bytes]] = []
        self.workers: list[tuple[Any, threading.Thread]] = []
        self.client: Any = None  # the app of app_stack(), if any

    # --- environment for child processes --------------------------------------------

    def env(self) -> dict[str, str]:
        s = self.settings
        return {**os.environ, "STEPSTREAM_BROKERS": s.brokers or "",
                "STEPSTREAM_PREFIX": s.prefix, "STEPSTREAM_PARTITIONS": str(s.partitions),
                "STEPSTREAM_RETRY_BACKOFF_BASE_MS": str(s.retry_backoff_base_ms),
                "PYTHONPATH": str(ROOT), "STEPSTREAM_API_KEYS": API_KEY}

    # --- engine ---------------------------------------------------------------------

    def start_engine(self, state_dir: Path | None = None) -> Engine:
        self.engine = Engine(self.settings, state_dir or self.tmp / "state")
        self.engine.start()
        assert self.engine.wait_ready(60), "engine got no partitions"
        return self.engine

    def spawn(self, *args: str, log: str = "child") -> subprocess.Popen[bytes]:
        out = open(self.tmp / f"{log}.log", "ab")  # noqa: SIM115 - closed with the child
        proc = subprocess.Popen([sys.executable, "-m", "engine", *args], env=self.env(),
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.children.append(proc)
        return proc

    # --- workers --------------------------------------------------------------------

    def start_worker(self, client: Any, concurrency: int = 50) -> Any:
        worker = client.worker(concurrency=concurrency)
        thread = threading.Thread(target=lambda: asyncio.run(worker.run_async()), daemon=True)
        thread.start()
        self.workers.append((worker, thread))
        return worker

    def wait_functions(self, *fn_ids: str, timeout: float = 30) -> None:
        """Until the engine's registry holds every function (workers publish at start)."""
        def known() -> bool:
            if self.engine is not None:
                have = {f["id"] for f in self.engine.queries.functions()}
            else:
                have = {f["id"] for f in self.api("/v1/functions")["data"]}
            return set(fn_ids) <= have
        wait_for(known, timeout, f"functions {fn_ids} registered")

    def send(self, name: str, data: dict[str, Any], event_id: str | None = None) -> str:
        """Send one event through the app's client; its id."""
        [sent] = self.client.send_sync(sdk.Event(name=name, data=data, id=event_id))
        return str(sent)

    # --- observing ------------------------------------------------------------------

    def run(self, run_id: str) -> dict[str, Any] | None:
        assert self.engine is not None
        return self.engine.queries.get_run(run_id)

    def runs_for(self, event_id: str) -> list[dict[str, Any]]:
        assert self.engine is not None
        return self.engine.queries.runs_for_event(event_id)

    def finished_run(self, event_id: str, timeout: float = 30) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            runs = self.runs_for(event_id)
            if runs and runs[0]["status"] in ("completed", "failed", "cancelled"):
                return runs[0]
            return None
        try:
            return wait_for(done, timeout, f"a finished run for event {event_id}")
        except AssertionError as exc:
            # Say where it stopped, so a failure in CI can be understood from its log.
            runs = self.runs_for(event_id)
            seen = [{k: r.get(k) for k in ("run_id", "status", "waiting", "task_seq")}
                    | {"timeline": (r.get("timeline") or [])[-6:]} for r in runs]
            raise AssertionError(f"{exc}; its runs: {seen or 'none'}") from None

    def api(self, path: str, port: int = 8288) -> Any:
        return self.api_at(port, path)

    @staticmethod
    def api_at(port: int, path: str) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Bearer {API_KEY}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def dead_letters(self, expect: int, timeout: float = 30) -> list[DeadLetter]:
        c = Consumer({"bootstrap.servers": self.settings.brokers, "group.id": uuid.uuid4().hex,
                      **self.settings.consumer_tuning()})
        c.assign([TopicPartition(self.catalog.dlq, p, 0)
                  for p in range(self.settings.partitions)])
        found: list[DeadLetter] = []
        try:
            def enough() -> bool:
                for m in c.consume(100, 0.1):
                    if not m.error():
                        rec = decode(m.value())
                        assert isinstance(rec, DeadLetter)
                        found.append(rec)
                return len(found) >= expect
            wait_for(enough, timeout, f"{expect} dead letters")
        finally:
            c.close()
        return found

    def produce_raw(self, topic: str, value: bytes, key: bytes = b"junk",
                    partition: int = 0) -> None:
        p = Producer({"bootstrap.servers": self.settings.brokers})
        p.produce(topic, value, key, partition=partition)
        assert p.flush(10) == 0

    # --- teardown -------------------------------------------------------------------

    def close(self) -> None:
        for worker, thread in self.workers:
            worker.stop()
            thread.join(30)
        for proc in self.children:
            terminate(proc)
        if self.engine is not None:
            self.engine.stop()


@contextlib.contextmanager
def app_stack(broker: str, tmp: Path, make_client: Callable[[Settings], Any],
              fn_ids: list[str]) -> Iterator[Stack]:
    """A stack with an in-process engine and one worker thread running the app that
    ``make_client`` builds, once every function in ``fn_ids`` is registered."""
    stack = Stack(broker, tmp, backoff_ms=100)
    client = None
    try:
        stack.start_engine()
        client = make_client(stack.settings)
        stack.start_worker(client)
        stack.client = client
        stack.wait_functions(*fn_ids)
        yield stack
    finally:
        stack.close()
        if client is not None:
            client.close()


class Api:
    """A spawned engine process with its HTTP API, on the stack's topics."""

    def __init__(self, stack: Stack, tmp: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        stack.spawn("engine", "--port", str(self.port), "--state-dir", str(tmp / "engine"),
                    "--no-create-topics", log="engine")
        wait_for(self._healthy, 60, "the engine's API")

    def _healthy(self) -> bool:
        try:
            return self.get("/health")[0] == 200
        except OSError:
            return False

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and JSON answer of one request (a 4xx/5xx is returned, not raised)."""
        return api_request(self.base, method, path, body)

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.call("POST", path, body)

    def function_ids(self) -> set[str]:
        return {f["id"] for f in self.get("/v1/functions")[1]["data"]}

    def runs(self, **query: str) -> list[dict[str, Any]]:
        status, body = self.get("/v1/runs?" + urllib.parse.urlencode(
            {"limit": "1000", **query}))
        assert status == 200, body
        return list(body["data"])


class ServedApi:
    """``make_app`` on the stack's in-process engine, served on a free port from its own
    thread and event loop (the HTTP layer as a client meets it, without a subprocess)."""

    def __init__(self, stack: Stack, *, dev: bool, event_keys: frozenset[str] = frozenset(),
                 api_keys: frozenset[str] = frozenset()) -> None:
        assert stack.engine is not None
        self.ingest = EventIngest(stack.settings)
        self.ingest.start()
        self.app = make_app(stack.engine.queries, self.ingest, dev=dev,
                            event_keys=event_keys, api_keys=api_keys)
        self.loop = asyncio.new_event_loop()
        self.runner: Any = None
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.runner = self.loop.run_until_complete(start_server(self.app, "127.0.0.1", 0))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10)
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.ingest.close()


def api_request(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The status and JSON answer of one keyed API request (a 4xx/5xx is an answer too)."""
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())

