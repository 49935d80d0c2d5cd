"""Benchmark: what the engine's metrics cost (``python -m bench.all --only metrics``).

Two measurements, metrics off (``STEPSTREAM_METRICS=0``) beside on:

1. the edge in-process, no broker: the history :mod:`bench.fold_rate` folds (3-step
   runs, 5 records each) through what the processor runs per batch
   (:func:`bench.profile_fold.fold_all`), with the metrics hook timed on its own. Its
   CPU per run, times 500 runs/s, is the added CPU at 500 runs/s as a share of one
   core; also what a partition's tally costs to build on assignment, per run held;
2. end to end: the engine process's CPU at an offered 500 runs/s
   (:func:`bench.runs.offered_load`), one fresh engine and worker with metrics off, one
   with them on. On the shared 2-core machine this difference is within the noise of
   the measurement; (1) is the figure to quote, (2) shows nothing else moved.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import fmt
from bench.launch import section_broker
from bench.profile_fold import Msg, fold_all, messages
from engine.observe.metrics import EngineMetrics
from engine.runtime.batch import BatchResult
from engine.runtime.processor import tune_gc
from engine.store.partition import PartitionStore
from topics.settings import Settings

RATE = 500.0


def _fold(msgs: list[Msg], stores: dict[int, PartitionStore], metrics: EngineMetrics,
          batch_size: int) -> float:
    """Fold ``msgs`` as the processor does; the seconds spent in the metrics hook."""
    hook = 0.0

    def observe(p: int, result: BatchResult) -> None:
        nonlocal hook
        began = time.perf_counter()
        metrics.batch_written("runs", p, result.view, result.applied, True)
        hook += time.perf_counter() - began
    fold_all(msgs, stores, Settings(), batch_size, before_commit=observe)
    return hook


def edge_cost(runs: int, partitions: int, batch_size: int = 5000) -> dict[str, Any]:
    """The metrics hook's CPU per run in-process, and the fold's with metrics off/on."""
    msgs = messages(runs, partitions)
    tune_gc()
    out: dict[str, Any] = {"runs": runs, "batch": batch_size}
    for label, enabled in (("off", False), ("on", True)):
        with tempfile.TemporaryDirectory(prefix="stepstream-bench-metrics-") as tmp:
            stores = {p: PartitionStore(Path(tmp) / str(p)) for p in range(partitions)}
            metrics = EngineMetrics(enabled=enabled)
            for p, store in stores.items():
                metrics.assigned(p, store)
            cpu = time.process_time()
            hook = _fold(msgs, stores, metrics, batch_size)
            out[f"fold_cpu_{label}_s"] = round(time.process_time() - cpu, 3)
            if enabled:
                out["hook_s"] = round(hook, 4)
                out["hook_us_per_run"] = round(hook / runs * 1e6, 2)
                # The same stores, read back as a newly assigned owner would.
                again = EngineMetrics()
                began = time.perf_counter()
                for p, store in stores.items():
                    again.assigned(p, store)
                out["assign_us_per_run"] = round((time.perf_counter() - began) / runs * 1e6, 2)
                out["render_ms"] = round(_timed(metrics.render) * 1000, 3)
            for store in stores.values():
                store.close()
    out["added_cpu_pct_at_500"] = round(out["hook_us_per_run"] * RATE / 1e6 * 100, 3)
    return out


def _timed(fn: Any) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def engine_cpu(broker: str | None, *, duration: float, partitions: int, concurrency: int,
               drain: float, order: tuple[str, ...] = ("off", "on")) -> dict[str, Any]:
    """The engine's CPU at an offered 500 runs/s, metrics off and on (in ``order``):
    % of one core while measuring, and CPU ms per completed run."""
    from bench.runs import measure_system, offered_load, start_ours

    out: dict[str, Any] = {}
    for label in order:
        value = "1" if label == "on" else "0"
        with section_broker(broker) as b, \
                tempfile.TemporaryDirectory(prefix="stepstream-bench-metrics-") as tmp:
            start = functools.partial(start_ours, b, partitions, Path(tmp), concurrency,
                                      what="metrics",
                                      engine_env={"STEPSTREAM_METRICS": value})
            r = measure_system(start, functools.partial(offered_load, rate=RATE,
                                                        duration=duration, drain=drain))
        cpu = r.get("cpu") or {}
        completed = r.get("completed") or 0
        cpu_s = cpu.get("engine_cpu_s")
        out[label] = {"engine_cpu_pct": cpu.get("engine_cpu_pct"), "engine_cpu_s": cpu_s,
                      "engine_cpu_ms_per_run": (round(cpu_s * 1000 / completed, 3)
                                                if cpu_s is not None and completed else None),
                      "sustained_rate": r.get("sustained_rate"),
                      "completed": r.get("completed"), "runs": r.get("runs"),
                      "p99_ms": r.get("p99_ms")}
    return out


def bench_metrics(broker: str | None, *, runs: int, partitions: int, concurrency: int,
                  duration: float, drain: float) -> dict[str, Any]:
    """Both measurements (``duration`` 0: the in-process one only)."""
    out: dict[str, Any] = {"edge": edge_cost(runs, partitions)}
    print_edge(out["edge"])
    if duration > 0:
        out["engine"] = engine_cpu(broker, duration=duration, partitions=partitions,
                                   concurrency=concurrency, drain=drain)
        print_engine(out["engine"])
    return out


def bench_metrics_section(args: Any) -> dict[str, Any]:
    """Section 8 of :mod:`bench.all`, from its arguments."""
    print(f"\n== 8. metrics: the engine's added CPU at {RATE:g} runs/s, off beside on",
          flush=True)
    return bench_metrics(args.broker, runs=args.fold_runs, partitions=args.partitions,
                         concurrency=args.concurrency_list[0],
                         duration=args.metrics_duration, drain=args.drain)


def print_edge(r: dict[str, Any]) -> None:
    print(f"  in-process, {r['runs']:,} runs: the metrics hook {fmt(r['hook_us_per_run'])} µs "
          f"per run -> {r['added_cpu_pct_at_500']:g} % of one core at {RATE:g} runs/s; fold "
          f"CPU metrics off {r['fold_cpu_off_s']} s, on {r['fold_cpu_on_s']} s; tally built "
          f"on assignment {fmt(r['assign_us_per_run'])} µs per run held; a scrape renders in "
          f"{r['render_ms']} ms")


def print_engine(r: dict[str, Any]) -> None:
    for label in ("off", "on"):
        x = r.get(label) or {}
        print(f"  end to end at {RATE:g} runs/s, metrics {label}: engine CPU "
              f"{fmt(x.get('engine_cpu_pct'), '%')} ({fmt(x.get('engine_cpu_ms_per_run'))} ms "
              f"per run), {fmt(x.get('sustained_rate'))} runs/s "
              f"sustained ({x.get('completed')}/{x.get('runs')}), p99 "
              f"{fmt(x.get('p99_ms'), ' ms')}")
