"""Benchmark 1: fold rate (records/s) of the engine's processor loop, and of a Faust peer.

Both read the same pre-produced ``runs`` history (same topic, same bytes) in their own
consumer groups. The clock starts at the first applied record, so consumer-group join
(and, for Faust, table recovery of an empty changelog) is excluded; the time from
start to the first record is reported separately as ``startup_s``.
"""

from __future__ import annotations

import gc
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import launch
from bench.common import cpu_seconds, wait_until
from bench.history import FN_ID, RECORDS_PER_RUN, produce_history
from bench.launch import (
    Child,
    bench_settings,
    create_topics,
    faust_env,
    faust_missing,
    new_prefix,
)
from engine.cli.provision import ensure_topics
from engine.runtime.processor import Processor
from topics.catalog import Catalog
from topics.settings import Settings


def run_ours(settings: Settings, total: int, state_dir: Path, timeout: float) -> dict[str, Any]:
    """The real processor loop (consume, fold, produce tasks, flush, WriteBatch with
    offsets), timed from its first applied batch until it has applied ``total``."""
    proc = Processor(settings, state_dir)
    thread = threading.Thread(target=proc.run, name="processor", daemon=True)
    t_start = time.perf_counter()
    thread.start()
    try:
        # Sampled every 2 ms by this (otherwise idle) thread. The first sample that sees
        # applied records marks the end of the first batch's fold; those records are
        # subtracted so the rate covers exactly the records folded after the clock started.
        deadline = time.monotonic() + timeout
        while proc.applied == 0:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the processor applied nothing")
            time.sleep(0.002)
        t_first = time.perf_counter()
        cpu_first, broker_first = time.process_time(), cpu_seconds(launch.BROKER_PID)
        first_batch = proc.applied
        while proc.applied < total:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the processor stopped at {proc.applied}/{total} records")
            time.sleep(0.002)
        t_end = time.perf_counter()
        cpu_end, broker_end = time.process_time(), cpu_seconds(launch.BROKER_PID)
        applied = proc.applied
    finally:
        proc.stop()
        thread.join(30)
    elapsed = t_end - t_first
    out = {"records": applied, "rate": (applied - first_batch) / elapsed,
           "elapsed_s": elapsed, "startup_s": t_first - t_start, "first_batch": first_batch,
           # this process: the processor thread and librdkafka's threads
           "cpu_pct": 100 * (cpu_end - cpu_first) / elapsed}
    if broker_first is not None and broker_end is not None:
        out["broker_cpu_pct"] = 100 * (broker_end - broker_first) / elapsed
    return out


def run_faust(settings: Settings, total: int, work: Path, timeout: float,
              store: str = "rocksdb://") -> dict[str, Any]:
    """The Faust agent (bench.faust_fold) in a child process, on the same topic."""
    missing = faust_missing()
    if missing:
        raise RuntimeError(missing)
    catalog = Catalog(settings)
    tasks = settings.prefix + "faust-tasks"
    create_topics(settings.brokers or "", [tasks], settings.partitions)
    result = work / "faust-fold.json"
    env = {**faust_env(settings, work),
           "BENCH_FAUST_SOURCE": catalog.runs,
           "BENCH_FAUST_TASKS": tasks,
           "BENCH_FAUST_TOTAL": str(total),
           "BENCH_FAUST_RESULT": str(result),
           "BENCH_FAUST_APP_ID": settings.prefix + "faust-fold",
           "BENCH_FAUST_STORE": store}
    child = Child("faust", "bench.faust_fold", [], env, work / "faust-fold.log")
    t_start = time.time()
    try:
        wait_until(result.exists, timeout, "the Faust fold to finish", every=0.1,
                   alive=lambda: child.alive)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"{exc}; Faust log tail:\n{child.tail()}") from None
    finally:
        child.stop()
    r = json.loads(result.read_text())
    elapsed = r["end"] - r["first"]
    return {"records": r["applied"], "rate": (r["applied"] - 1) / elapsed,
            "elapsed_s": elapsed, "startup_s": r["first"] - t_start, "errors": r["errors"],
            "store": store, "table_driver": r.get("driver"),
            "cpu_pct": 100 * r["cpu_s"] / elapsed}


def bench_fold_rate(broker: str, *, runs: int, partitions: int, peer: bool,
                    timeout: float = 600) -> dict[str, Any]:
    settings = bench_settings(broker, new_prefix("fold"), partitions)
    ensure_topics(settings)
    t = time.perf_counter()
    total, size = produce_history(settings, Catalog(settings).runs, runs)
    out: dict[str, Any] = {
        "history": {"runs": runs, "records": total, "bytes": size, "fn_id": FN_ID,
                    "records_per_run": RECORDS_PER_RUN,
                    "produce_s": round(time.perf_counter() - t, 2)},
        "partitions": partitions, "prefix": settings.prefix,
    }
    with tempfile.TemporaryDirectory(prefix="stepstream-bench-fold-") as tmp:
        work = Path(tmp)
        threshold = gc.get_threshold()
        try:
            out["ours"] = run_ours(settings, total, work / "state", timeout)
        finally:
            # The processor froze this process's objects (engine.runtime.processor.tune_gc) and
            # holds its Kafka clients in reference cycles: without this its producer
            # outlives the section's broker and retries it every second for the rest of
            # the run, in this process.
            gc.unfreeze()
            gc.set_threshold(*threshold)
            gc.collect()
        if peer:
            try:
                out["peer"] = run_faust(settings, total, work, timeout)
            except Exception as exc:
                out["peer"] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    return out
