"""Starting the processes the benchmarks measure: the dev broker, the shipped engine and
a worker (``python -m engine ...``), and the peers' child processes, each on a topic
prefix of its own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

import sdk
from bench.common import Observer
from engine.cli.devbroker import DevBroker, free_port
from engine.cli.provision import ensure_topics
from topics.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

# The dev broker's process id when this run started it (its CPU time is reported).
BROKER_PID: int | None = None


@contextlib.contextmanager
def section_broker(broker: str | None) -> Iterator[str]:
    """The broker for one benchmark section: ``broker`` if given, else a fresh dev
    broker. Tansu keeps every topic in memory and got measurably slower as earlier
    sections' topics piled up (broker CPU at 100 runs/s: 58% fresh, 90% after the
    other sections), so each section starts clean; stepstream and its peer still share
    the section's broker."""
    global BROKER_PID
    if broker:
        yield broker
        return
    with DevBroker() as dev:
        BROKER_PID = dev.pid
        yield dev.address


def faust_missing() -> str | None:
    """Why the Faust peers cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("faust") is None:
        return "faust-streaming is not installed (pip install -e '.[bench]')"
    return None


def dbos_missing() -> str | None:
    """Why the DBOS peer cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("dbos") is None:
        return "dbos is not installed (pip install -e '.[bench]')"
    return None


def new_prefix(what: str) -> str:
    """A fresh topic prefix (and consumer-group namespace) for one benchmark."""
    return f"bench-{what}-{uuid.uuid4().hex[:6]}."


def bench_settings(broker: str, prefix: str, partitions: int) -> Settings:
    return Settings(brokers=broker, prefix=prefix, partitions=partitions)


# The engine outside dev mode needs an API key; the benchmarks send this one.
API_KEY = "bench-api-key"


def api_get(port: int, path: str, timeout: float = 10.0) -> Any:
    """GET ``path`` on an engine's HTTP API with the benchmarks' key, decoded."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTREAM_")}
    env.update({
        "STEPSTREAM_BROKERS": settings.brokers or "",
        "STEPSTREAM_PREFIX": settings.prefix,
        "STEPSTREAM_PARTITIONS": str(settings.partitions),
        "STEPSTREAM_FETCH_WAIT_MAX_MS": str(settings.fetch_wait_max_ms),
        "STEPSTREAM_API_KEYS": API_KEY,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                      if p),
    })
    return env


def faust_env(settings: Settings, work: Path) -> dict[str, str]:
    """The environment of a Faust peer (``BENCH_FAUST_*``, read by the peer modules):
    the same broker, prefix, partitions and fetch wait as stepstream."""
    return {**settings_env(settings), "BENCH_FAUST_BROKER": settings.brokers or "",
            "BENCH_FAUST_PREFIX": settings.prefix,
            "BENCH_FAUST_PARTITIONS": str(settings.partitions),
            "BENCH_FAUST_DATADIR": str(work / "faust-data"),
            "BENCH_FAUST_FETCH_WAIT_MS": str(settings.fetch_wait_max_ms)}


def create_topics(broker: str, names: Iterable[str], partitions: int) -> None:
    """Create plain delete-policy topics (for the peers' own topics)."""
    admin = AdminClient({"bootstrap.servers": broker})
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1)
                                   for n in names], operation_timeout=30, request_timeout=30)
    for fut in futures.values():
        fut.result(30)
    want = set(futures)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(n in topics and len(topics[n].partitions) == partitions for n in want):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics {sorted(want)} not visible in metadata after 30 s")


class Child:
    """A child process running ``python -m module args``, its output in a log file."""

    def __init__(self, name: str, module: str, args: list[str], env: dict[str, str],
                 log: Path) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=ROOT,
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (this child only, by pid)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait()
        self._out.close()


def bench_pids(children: list[Child]) -> dict[str, int | None]:
    """The processes whose CPU a benchmark reports: its children, the broker, itself."""
    return {**{c.name: c.proc.pid for c in children}, "broker": BROKER_PID,
            "bench": os.getpid()}


@dataclass
class Stepstream:
    """The shipped engine and one worker as child processes, on one topic prefix, and a
    client that sends events to them."""

    settings: Settings
    work: Path
    api_port: int
    children: list[Child] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)
    sender: sdk.Client | None = None

    @property
    def engine(self) -> Child:
        return self.children[0]

    @property
    def worker(self) -> Child:
        return self.children[1]

    @property
    def state_dir(self) -> Path:
        return self.work / "engine-state"

    def alive(self) -> bool:
        return all(c.alive for c in self.children)

    def check_alive(self) -> None:
        for c in self.children:
            if not c.alive:
                raise RuntimeError(f"stepstream {c.name} exited ({c.proc.returncode}); "
                                   f"log tail:\n{c.tail()}")

    def api_get(self, path: str, timeout: float = 10.0) -> Any:
        """GET ``path`` on the engine's HTTP API, decoded."""
        return api_get(self.api_port, path, timeout)

    def close(self) -> None:
        for c in reversed(self.children):
            c.stop()
        for o in self.observers:
            o.close()
        if self.sender is not None:
            self.sender.close(10)


def start_stepstream(broker: str, partitions: int, work: Path, app_ref: str,
                     concurrency: int, what: str, *, engine_module: str = "engine",
                     engine_args: list[str] | None = None,
                     engine_env: dict[str, str] | None = None,
                     producer_stats_ms: int = 0) -> Stepstream:
    """Provision a fresh prefix, then start ``python -m engine engine`` and ``python -m
    engine worker app_ref``. ``engine_module``/``engine_args``: a wrapper that runs the
    same engine CLI (:mod:`bench.engine_probe`) and its arguments before the CLI's;
    ``engine_env``: more environment for the engine (``STEPSTREAM_*`` settings);
    ``producer_stats_ms``: both log their producers' counts (bench/work.py)."""
    settings = bench_settings(broker, new_prefix(what), partitions)
    ensure_topics(settings)
    env = settings_env(settings)
    if producer_stats_ms:
        env["STEPSTREAM_PRODUCER_STATS_MS"] = str(producer_stats_ms)
    work.mkdir(parents=True, exist_ok=True)
    s = Stepstream(settings, work, free_port())
    try:
        s.children.append(Child("engine", engine_module, [
            *(engine_args or []), "engine", "--host", "127.0.0.1", "--port", str(s.api_port),
            "--state-dir", str(s.state_dir)], {**env, **(engine_env or {})},
            work / "engine.log"))
        s.children.append(Child("worker", "engine", [
            "worker", app_ref, "--concurrency", str(concurrency)], env, work / "worker.log"))
        s.sender = sdk.Client("bench-sender", settings=settings)
    except BaseException:
        s.close()
        raise
    return s
