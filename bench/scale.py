"""Scale-out on this machine: 3-step runs with 1 or 2 engine processes and 1 or 3 worker
processes on one dev broker, each combination on a fresh topic prefix of the same shape
(``--partitions`` per topic), all of its processes sharing those topics.

Per combination, after the warm-up: which partitions each engine owns (``GET
/v1/cluster`` on each engine) and each worker owns (its ``assigned``/``revoked`` log
lines: Tansu does not answer a consumer group's members to ``describe_consumer_groups``),
waited for until both groups cover every partition once; then

- burst: ``--burst`` events at once, runs/s from the first send to the last completion;
- sustained: offered rates (open loop, :func:`bench.runs.offered_load`) from the lowest
  up, stopping at the first that does not complete every run with p99 under
  ``P99_TARGET_MS``; the best is the highest that did.

CPU per process (:class:`bench.common.CpuMeter`) for each, and records and bytes per
run from the producers' own counts (``STEPSTREAM_PRODUCER_STATS_MS``, whole combination
over every completed run, warm-up included). ``python -m bench.scale [--quick]``, or
section ``scale`` of ``python -m bench.all``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sdk
from bench import pipeline_app
from bench.common import (
    CpuMeter,
    Observer,
    completed_run_id,
    cpu_shares,
    dir_size,
    fmt,
    jsonable,
    wait_until,
)
from bench.launch import (
    Child,
    api_get,
    bench_pids,
    bench_settings,
    new_prefix,
    section_broker,
    settings_env,
)
from bench.runs import System, burst, measure_system, offered_load
from engine.cli.devbroker import free_port
from engine.cli.provision import ensure_topics
from topics.catalog import Catalog
from topics.producer_stats import parse_line

APP = "bench.pipeline_app:client"
COMBOS = ((1, 1), (1, 3), (2, 1), (2, 3))  # (engine processes, worker processes)
P99_TARGET_MS = 2000.0
BURST, QUICK_BURST = 3000, 300
RATES, QUICK_RATES = (200.0, 400.0, 800.0), (200.0,)
DURATION_S, QUICK_DURATION_S = 15.0, 3.0
DRAIN_S = 5.0  # enough to judge p99 < 2 s: a run not done 5 s after the end fails it
STATS_MS = 500

_ASSIGN = re.compile(r"worker \S+: (assigned|revoked) \[([0-9, ]*)\]")


def worker_partitions(log_text: str) -> list[int] | None:
    """The ``tasks`` partitions a worker owns by its log (``-v``): its ``assigned`` lines
    (eager rebalancing: each gives the whole assignment) less what it revoked since;
    None if it logged no assignment yet."""
    owned: set[int] | None = None
    for m in _ASSIGN.finditer(log_text):
        parts = {int(p) for p in m.group(2).split(",") if p.strip()}
        if m.group(1) == "assigned":
            owned = parts
        elif owned is not None:
            owned -= parts
    return None if owned is None else sorted(owned)


def covers(owners: dict[str, list[int] | None], partitions: int) -> bool:
    """Whether every owner has its assignment and together they own each of
    ``partitions`` exactly once (a settled group)."""
    if not owners or any(v is None for v in owners.values()):
        return False
    every = [p for v in owners.values() for p in v or ()]
    return sorted(every) == list(range(partitions))


def assignment_summary(owners: dict[str, list[int] | None]) -> str:
    """``"engine1 0-3, engine2 4-7"``: each owner's partitions, runs collapsed."""
    def runs(ps: Iterable[int]) -> str:
        out: list[str] = []
        for p in sorted(ps):
            if out and out[-1].split("-")[-1] == str(p - 1):
                out[-1] = f"{out[-1].split('-')[0]}-{p}"
            else:
                out.append(str(p))
        return ",".join(out) or "none"
    return ", ".join(f"{name} {'?' if ps is None else runs(ps)}" for name, ps in owners.items())


def producer_totals(logs: Iterable[Path]) -> dict[str, int]:
    """Records and bytes the producers of stopped processes sent, from each client's
    last stats line in ``logs``."""
    last: dict[str, Any] = {}
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if (found := parse_line(line)) is not None:
                last[f"{path}:{found[0]}"] = found[1]
    return {"records": sum(c.records for c in last.values()),
            "bytes": sum(c.bytes for c in last.values())}


@dataclass
class Scaled(System):
    """A :class:`bench.runs.System` of several engines and workers."""

    engine_ports: dict[str, int] = field(default_factory=dict)
    workers: dict[str, Path] = field(default_factory=dict)

    def assignments(self) -> dict[str, list[int] | None]:
        out: dict[str, list[int] | None] = {}
        for name, port in self.engine_ports.items():
            try:
                out[name] = sorted(api_get(port, "/v1/cluster", 5)["data"]["partitions"])
            except (OSError, ValueError, LookupError, TypeError):
                out[name] = None
        for name, log in self.workers.items():
            out[name] = worker_partitions(log.read_text(errors="replace"))
        return out

    def settled(self) -> dict[str, list[int] | None] | None:
        a = self.assignments()
        groups = (self.engine_ports, self.workers)
        ok = all(covers({n: a[n] for n in g}, self.settings.partitions) for g in groups)
        return a if ok else None


def start_scaled(broker: str, partitions: int, work: Path, engines: int, workers: int,
                 concurrency: int) -> Scaled:
    """``engines`` x ``python -m engine engine`` and ``workers`` x ``python -m engine -v
    worker`` (-v: the worker logs its assignments) on a fresh prefix."""
    settings = bench_settings(broker, new_prefix(f"scale-e{engines}w{workers}"), partitions)
    ensure_topics(settings)
    env = {**settings_env(settings), "STEPSTREAM_PRODUCER_STATS_MS": str(STATS_MS)}
    work.mkdir(parents=True, exist_ok=True)
    system = Scaled("scale", settings, Observer(settings, Catalog(settings).runs,
                                                 completed_run_id), pipeline_app.run_id)
    try:
        for i in range(1, engines + 1):
            port = system.engine_ports[f"engine{i}"] = free_port()
            system.children.append(Child(f"engine{i}", "engine", [
                "engine", "--host", "127.0.0.1", "--port", str(port),
                "--state-dir", str(work / f"engine{i}-state")], env, work / f"engine{i}.log"))
        for i in range(1, workers + 1):
            log = system.workers[f"worker{i}"] = work / f"worker{i}.log"
            system.children.append(Child(f"worker{i}", "engine", [
                "-v", "worker", APP, "--concurrency", str(concurrency)], env, log))
        system.sender = sdk.Client("bench-sender", settings=settings)
    except BaseException:
        system.close()
        raise
    return system


def sustained_ok(r: dict[str, Any]) -> bool:
    """Every offered run completed and p99 end to end under ``P99_TARGET_MS``."""
    return (r.get("runs") == r.get("completed") and "error" not in r
            and (r.get("p99_ms") or math.inf) < P99_TARGET_MS)


def measure_combo(system: System, *, n: int, rates: tuple[float, ...], duration: float
                  ) -> dict[str, Any]:
    """After :func:`bench.runs.warm_up`: the settled assignment, a burst, the rates."""
    assert isinstance(system, Scaled)
    out: dict[str, Any] = {"assignment": wait_until(system.settled, 90, "settled groups",
                                                    every=0.5, alive=system.alive)}
    pids = bench_pids(system.children)
    load = os.getloadavg()[0]
    meter = CpuMeter(pids)
    meter.start()
    out["burst"] = burst(system, n, max(60.0, n / 20))
    out["burst"]["cpu"] = meter.stop()
    out["sustained"] = {}
    for rate in rates:
        meter = CpuMeter(pids)
        meter.start()
        r = offered_load(system, rate, duration, DRAIN_S)
        r["cpu"] = meter.stop()
        out["sustained"][f"{rate:g}"] = r
        if not sustained_ok(r):
            break
        out["best_rate"] = rate
    out["assignment_after"] = system.assignments()
    out["loadavg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    return out


def bench_scale(broker: str | None, *, partitions: int, concurrency: int, n: int,
                rates: tuple[float, ...], duration: float,
                combos: tuple[tuple[int, int], ...] = COMBOS) -> dict[str, Any]:
    """Every combination on one broker (``broker``, else a fresh dev broker)."""
    out: dict[str, Any] = {"partitions": partitions, "concurrency": concurrency,
                           "burst_runs": n, "duration_s": duration,
                           "p99_target_ms": P99_TARGET_MS}
    with section_broker(broker) as b:
        for engines, workers in combos:
            key = f"e{engines}w{workers}"
            print(f"  -- {engines} engine(s), {workers} worker(s)", flush=True)
            try:
                r = one_combo(b, partitions, engines, workers, concurrency, n=n,
                              rates=rates, duration=duration)
            except Exception as exc:
                r = {"error": f"{type(exc).__name__}: {exc}"}
            out[key] = r
            print_combo(key, r)
    return out


def one_combo(broker: str, partitions: int, engines: int, workers: int, concurrency: int,
              *, n: int, rates: tuple[float, ...], duration: float) -> dict[str, Any]:
    """One combination: started, warmed up, measured (:func:`measure_combo`), stopped."""
    with tempfile.TemporaryDirectory(prefix="stepstream-bench-scale-") as tmp:
        started: list[Scaled] = []

        def start() -> Scaled:
            started.append(start_scaled(broker, partitions, Path(tmp), engines, workers,
                                        concurrency))
            return started[0]
        r = measure_system(start, functools.partial(measure_combo, n=n, rates=rates,
                                                    duration=duration))
        # The processes have stopped: their logs hold their producers' final counts.
        seen = started[0].observer.count()
        totals = producer_totals(c.log for c in started[0].children)
        # RocksDB on disk, every run's final state kept (warm-up runs included).
        totals["state_bytes"] = int(sum(dir_size(Path(tmp) / f"engine{i}-state")["mb"]
                                        for i in range(1, engines + 1)) * 1e6)
        r["produced_per_run"] = {"runs_seen": seen, **{
            f"{k}_per_run": v / seen for k, v in totals.items() if seen}}
    return r


def print_combo(key: str, r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"  {key}: ERROR {r['error']}")
        return
    print(f"  {key}: assignment {assignment_summary(r['assignment'])}")
    if r.get("assignment_after") != r["assignment"]:
        print(f"  {key}: after the runs {assignment_summary(r['assignment_after'])}")
    b = r["burst"]
    print(f"  {key}: burst {b['completed']}/{b['runs']} in {fmt(b.get('elapsed_s'), ' s')}:"
          f" {fmt(b.get('rate'), ' runs/s')}; CPU {cpu_shares(b['cpu'])}")
    for rate, s in r["sustained"].items():
        print(f"  {key}: {rate} runs/s offered: {s['completed']}/{s['runs']}, sustained "
              f"{fmt(s.get('sustained_rate'))}, p50 {fmt(s['p50_ms'], ' ms')} p99 "
              f"{fmt(s['p99_ms'], ' ms')} -> {'ok' if sustained_ok(s) else 'over'}; CPU "
              f"{cpu_shares(s['cpu'])}")
    pr = r.get("produced_per_run") or {}
    print(f"  {key}: best sustained at p99 < {P99_TARGET_MS:g} ms: "
          f"{fmt(r.get('best_rate'), ' runs/s')}; engines+workers produced "
          f"{fmt(pr.get('records_per_run'))} records, {fmt(pr.get('bytes_per_run'))} bytes "
          f"per run, state on disk {fmt(pr.get('state_bytes_per_run'))} bytes per run; load avg {r['loadavg_1m']}", flush=True)


def bench_scale_section(args: Any) -> dict[str, Any]:
    """Section ``scale`` of :mod:`bench.all`, from its arguments."""
    n = QUICK_BURST if args.quick else BURST
    rates = QUICK_RATES if args.quick else RATES
    duration = QUICK_DURATION_S if args.quick else DURATION_S
    print(f"\n== 10. scale-out: {{1,2}} engines x {{1,3}} workers, burst of {n}, rates "
          f"{'/'.join(f'{r:g}' for r in rates)} runs/s for {duration:g} s", flush=True)
    return bench_scale(args.broker, partitions=args.partitions,
                       concurrency=args.concurrency_list[0], n=n, rates=rates,
                       duration=duration)


@dataclass(frozen=True)
class PerRun:
    """Figures measured here (docs/scaling.md says by which command)."""

    engine_cpu_ms: float  # engine CPU per completed run
    worker_cpu_ms: float  # worker CPU per completed run
    fold_records_per_s: float  # one engine's processor thread (``--only fold``)
    folded_records: float = 4.0  # ``runs`` records the fold applies per 3-step run
    records: float = 8.0  # records on every topic per 3-step run
    bytes: float = 2550.0  # payload bytes on every topic per 3-step run
    state_bytes: float = 840.0  # RocksDB on disk per run held
    # Events one engine thread routes from one event name's partition (``--only batch``).
    routed_events_per_s: float = 6500.0


def plan(target: float, m: PerRun, *, hold_s: float, cpu_use: float = 0.7,
         headroom: float = 2.0, rf: int = 3, broker_write_mb_s: float = 150.0,
         reads: float = 1.0) -> dict[str, float]:
    """Processes, partitions and broker load for ``target`` runs/s: each process kept at
    ``cpu_use`` of a core; ``headroom`` x the processes in partitions (one partition is
    folded by one thread, and more partitions than members lets the group grow);
    ``hold_s`` a run's time in a worker slot (Little's law); the broker writes ``rf``
    copies, its consumers read each record ``reads`` times, and one broker writes at most
    ``broker_write_mb_s`` (an assumption about the cluster, not a measurement)."""
    engines = math.ceil(target * m.engine_cpu_ms / 1000 / cpu_use)
    workers = math.ceil(target * m.worker_cpu_ms / 1000 / cpu_use)
    partitions = 2 ** math.ceil(math.log2(max(engines, workers) * headroom))
    in_mb_s = target * m.bytes / 1e6
    return {"target": target, "engines": engines, "workers": workers,
            "slots": math.ceil(target * hold_s),
            "concurrency_per_worker": math.ceil(target * hold_s / workers),
            "partitions": partitions, "runs_per_partition": target / partitions,
            "fold_runs_per_partition_max": m.fold_records_per_s / m.folded_records,
            # Every event of one name is on one ``events`` partition, routed by one thread.
            "event_names_min": math.ceil(target / m.routed_events_per_s),
            "records_per_s": target * m.records, "in_mb_s": in_mb_s,
            "written_mb_s": in_mb_s * rf, "out_mb_s": in_mb_s * (reads + rf - 1),
            "brokers_for_writes": math.ceil(in_mb_s * rf / broker_write_mb_s),
            "state_mb_per_partition_per_s": target * m.state_bytes / partitions / 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="burst 300, 200 runs/s for 3 s")
    p.add_argument("--broker", help="use this broker instead of a fresh dev broker")
    p.add_argument("--partitions", type=int, default=8, help="partitions per topic (8)")
    p.add_argument("--concurrency", type=int, default=100, help="per worker (100)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--plan", type=float, nargs=5, metavar=("ENGINE_MS", "WORKER_MS", "FOLD",
                   "HOLD_S", "STATE_B"), help="measure nothing: print the plan for 100k and"
                   " 1M runs/s from these per-run figures (docs/scaling.md)")
    a = p.parse_args(argv)
    if a.plan:
        m = PerRun(a.plan[0], a.plan[1], a.plan[2], state_bytes=a.plan[4])
        for target in (100_000, 1_000_000):
            print(json.dumps(jsonable(plan(target, m, hold_s=a.plan[3]))))
        return 0
    a.concurrency_list = [a.concurrency]
    r = bench_scale_section(a)
    if a.json:
        a.json.write_text(json.dumps(jsonable(r), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
