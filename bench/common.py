"""Pieces shared by the benchmarks: prefixes, child processes, the log observer, stats."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgpack
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from topics.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

# The dev broker's process id when this run started it (its CPU time is reported).
BROKER_PID: int | None = None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU seconds used by named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.before: dict[str, float | None] = {}
        self.wall = 0.0

    def start(self) -> None:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.wall = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall
        out: dict[str, Any] = {"wall_s": round(wall, 2)}
        for name, pid in self.pids.items():
            after, before = cpu_seconds(pid), self.before.get(name)
            if after is not None and before is not None:
                out[f"{name}_cpu_s"] = round(after - before, 2)
                out[f"{name}_cpu_pct"] = round(100 * (after - before) / wall, 1)
        return out


def cpu_shares(cpu: dict[str, Any] | None) -> str:
    """``"engine 17.4%, worker 13.2%, ..."`` from a :meth:`CpuMeter.stop` result, or ""."""
    return ", ".join(f"{k[:-8]} {v:g}%" for k, v in (cpu or {}).items()
                     if k.endswith("_cpu_pct"))


def faust_missing() -> str | None:
    """Why the Faust peers cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("faust") is None:
        return "faust-streaming is not installed (pip install -e '.[bench]')"
    return None


def new_prefix(what: str) -> str:
    """A fresh topic prefix (and consumer-group namespace) for one benchmark."""
    return f"bench-{what}-{uuid.uuid4().hex[:6]}."


def bench_settings(broker: str, prefix: str, partitions: int) -> Settings:
    return Settings(brokers=broker, prefix=prefix, partitions=partitions)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTREAM_")}
    env.update({
        "STEPSTREAM_BROKERS": settings.brokers or "",
        "STEPSTREAM_PREFIX": settings.prefix,
        "STEPSTREAM_PARTITIONS": str(settings.partitions),
        "STEPSTREAM_FETCH_WAIT_MAX_MS": str(settings.fetch_wait_max_ms),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                      if p),
    })
    return env


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


def wait_until(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.05,
               alive: Callable[[], bool] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if alive is not None and not alive():
            raise RuntimeError(f"a process died while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


class Observer:
    """Reads a topic from the beginning on its own thread and records completions.

    ``extract(value) -> key | None`` picks the records that mark a completion; the
    first time a key is seen, the record's CreateTime (set by its producer when the
    completion was produced; in seconds) is stored in ``seen``. Taking the time from
    the record rather than from its arrival here lets the observer fetch lazily
    (``fetch_wait_ms``): on the dev broker every fetch costs broker CPU, and the broker
    is a bottleneck of the systems measured. No consumer group (plain assignment), so
    it never rebalances anyone.
    """

    def __init__(self, settings: Settings, topic: str,
                 extract: Callable[[bytes], str | None], fetch_wait_ms: int = 100) -> None:
        self.extract = extract
        self.seen: dict[str, float] = {}
        self.records = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.consumer = Consumer({
            "bootstrap.servers": settings.brokers,
            "group.id": "observer-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": fetch_wait_ms,
            "enable.partition.eof": False,
        })
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        self.thread = threading.Thread(target=self._run, name="observer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self.consumer.poll(0.1)
            if first is None:
                continue
            msgs = [first, *self.consumer.consume(10_000, 0)]
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        print(f"observer: {err}", file=sys.stderr)
                    continue
                self.records += 1
                value = m.value()
                key = self.extract(value) if value is not None else None
                if key is not None:
                    kind, ms = m.timestamp()
                    at = ms / 1000 if kind == TIMESTAMP_CREATE_TIME else time.time()
                    with self.lock:
                        self.seen.setdefault(key, at)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.consumer.close()


def completed_run_id(value: bytes) -> str | None:
    """The run id of an ``outcomes.reported`` record that completes its function."""
    if b"function.completed" not in value:
        return None  # most records: skip decoding them (the observer shares a core)
    try:
        body = msgpack.unpackb(value, raw=False)
    except Exception:
        return None
    if not isinstance(body, dict) or body.get("k") != "outcomes.reported":
        return None
    for o in body.get("outcomes") or ():
        if isinstance(o, dict) and o.get("op") == "function.completed":
            return str(body.get("run_id"))
    return None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"
    else:
        text = str(value)
    return f"{text}{unit}"
