"""Benchmark 6: what flow control costs. The three-step run of the latency section at one
fixed offered rate (open loop, :func:`bench.runs.offered_load`), three ways
(:mod:`bench.flow_app`):

- ``plain``: no flow control, the peer every other figure is compared with;
- ``keys``: ``Concurrency(limit=10, key="event.data.k")`` fed 1,000 distinct keys;
- ``hot``: the same limit fed one key, so every run waits on one gate of 10 slots on
  one partition.

Each variant runs on a fresh dev broker (Tansu slows down as topics pile up, which would
charge the later variants) with its own engine and worker, one after the other in the
same invocation. Overhead = how much lower the sustained runs/s and how much higher the
p99 latency are than ``plain``'s; the floor (issue 10) is 25 % on both.

The limit is checked from the log, not from the engine's counters: each pass of a run
holds its slot from before its ``task`` record is produced until after its final report
is folded, so the passes in flight at once per gate key — intervals from the task's
CreateTime to the final report's — can never exceed the limit if the engine keeps it.
"""

from __future__ import annotations

import functools
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import flow_app
from bench.common import fmt, stats
from bench.hops import Passes, read_passes
from bench.launch import section_broker
from bench.runs import System, measure_system, offered_load, start_ours

FLOOR_OVERHEAD_PCT = 25.0
LABELS = {"plain": "no flow control",
          "keys": f"Concurrency(limit={flow_app.LIMIT}, key={flow_app.KEY}), {{keys}} keys",
          "hot": f"Concurrency(limit={flow_app.LIMIT}, key={flow_app.KEY}), one hot key"}


def in_flight(passes: Passes) -> dict[str, Any]:
    """The most passes in flight at once, over all runs (``overall``) and per concurrency
    gate key (``per_key_max``, on ``key``; None without gates), from the log."""
    by_gate: dict[str, list[tuple[int, int]]] = defaultdict(list)
    every: list[tuple[int, int]] = []
    for (run_id, seq), started in passes.tasks.items():
        ended = passes.finals.get((run_id, seq))
        if ended is None:
            continue
        every.append((started, ended))
        for gate in passes.gates.get(run_id, ()):
            by_gate[gate].append((started, ended))
    peaks = {gate: max_overlap(spans) for gate, spans in by_gate.items()}
    top = max(peaks, key=lambda g: peaks[g]) if peaks else None
    held = [end - start for start, end in every]
    return {"overall": max_overlap(every), "per_key_max": peaks[top] if top else None,
            "key": top, "gate_keys": len(peaks), "passes": len(every),
            "pass_ms": {**stats(held), "mean": sum(held) / len(held) if held else None}}


def max_overlap(spans: list[tuple[int, int]]) -> int:
    """The most intervals ``(start, end)`` open at one instant; an interval ending at the
    instant another starts does not overlap it (a release grants the next run's slot)."""
    edges = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def overhead(base: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """``r`` against ``base`` (both :func:`bench.runs.offered_load` results): runs/s lost
    and p50/p99 latency added, in % of ``base``; ``ok`` when every run completed, the
    limit held, and both the runs/s and the p99 overhead are within the floor."""
    def pct(ours: float | None, theirs: float | None, sign: int) -> float | None:
        if not ours or not theirs:
            return None
        return sign * (ours - theirs) / theirs * 100

    out = {"runs_pct": pct(r.get("sustained_rate"), base.get("sustained_rate"), -1),
           "p50_pct": pct(r.get("p50_ms"), base.get("p50_ms"), 1),
           "p99_pct": pct(r.get("p99_ms"), base.get("p99_ms"), 1)}
    flight = r.get("in_flight") or {}
    peak = flight.get("per_key_max")
    # Only a log read back to its end proves it: every completed run's pass is in it.
    out["limit_held"] = (peak is not None and peak <= flow_app.LIMIT
                         and flight.get("passes", 0) >= (r.get("completed") or 0))
    out["ok"] = bool(r.get("completed") == r.get("runs") and out["limit_held"]
                     and all(out[k] is not None and out[k] <= FLOOR_OVERHEAD_PCT
                             for k in ("runs_pct", "p99_pct")))
    return out


def measure_variant(system: System, *, rate: float, duration: float, drain: float
                    ) -> dict[str, Any]:
    out = offered_load(system, rate, duration, drain)
    out["in_flight"] = in_flight(read_passes(system.settings))
    return out


def bench_flow(broker: str | None, *, rate: float, duration: float, partitions: int,
               concurrency: int, keys: int, drain: float = 300.0) -> dict[str, Any]:
    """Every variant at ``rate`` runs/s for ``duration`` s (``broker``: None for a fresh
    dev broker per variant), and each flow-control variant's overhead over ``plain``."""
    out: dict[str, Any] = {"rate": rate, "duration_s": duration, "keys": keys,
                           "limit": flow_app.LIMIT, "concurrency": concurrency,
                           "variants": {}}
    runs = out["variants"]
    for variant in flow_app.VARIANTS:
        print(f"  {variant}: {LABELS[variant].format(keys=keys)} ...", flush=True)
        try:
            with section_broker(broker) as b, \
                    tempfile.TemporaryDirectory(prefix="stepstream-bench-flow-") as tmp:
                start = functools.partial(
                    start_ours, b, partitions, Path(tmp), concurrency,
                    app="bench.flow_app:client", key_for=flow_app.run_id_maker(variant),
                    event=flow_app.event_maker(variant, keys), what="flow")
                runs[variant] = measure_system(start, functools.partial(
                    measure_variant, rate=rate, duration=duration, drain=drain))
        except Exception as exc:
            runs[variant] = {"error": f"{type(exc).__name__}: {exc}"}
        print_variant(variant, runs[variant], runs.get("plain"), keys)
    return out


def print_variant(variant: str, r: dict[str, Any], base: dict[str, Any] | None,
                  keys: int) -> None:
    label = LABELS[variant].format(keys=keys)
    if "p99_ms" not in r:
        print(f"    {label}: ERROR {r.get('error')}")
        return
    flight = r.get("in_flight") or {}
    per_key = ("" if flight.get("per_key_max") is None else
               f", per key at most {flight['per_key_max']} (over {flight['gate_keys']} keys)")
    print(f"    {label}: {fmt(r.get('sustained_rate'))} runs/s sustained "
          f"({r['completed']}/{r['runs']} completed), p50 {fmt(r['p50_ms'], ' ms')}, "
          f"p99 {fmt(r['p99_ms'], ' ms')}, max {fmt(r['max_ms'], ' ms')}; passes in flight "
          f"at once: {flight.get('overall')}{per_key}")
    if r.get("overall_rate"):
        last = r["completed"] / r["overall_rate"] - r["duration_s"]
        print(f"      the last run completed {fmt(last, ' s')} after the last event was sent")
    hops = r.get("hops") or {}
    wait = hops.get("run requested -> task 1") or {}
    held = flight.get("pass_ms") or {}
    print(f"      run requested -> task 1 (fold, slot wait): p50 {fmt(wait.get('p50_ms'))}, "
          f"p90 {fmt(wait.get('p90_ms'))} ms; a pass (task -> final report): mean "
          f"{fmt(held.get('mean'))}, p99 {fmt(held.get('p99'))} ms; CPU {_cpu(r)}; load "
          f"average before {r.get('loadavg_1m_before')}")
    rate = r.get("sustained_rate")
    if (variant == "hot" and held.get("mean") and rate and rate < 0.98 * r["offered_rate"]
            and flight.get("per_key_max") == flow_app.LIMIT):
        # Little's law: with a growing backlog every slot is busy, so each run held one
        # for LIMIT / rate seconds.
        cycle = flow_app.LIMIT * 1000 / rate
        print(f"      one key, {flow_app.LIMIT} slots busy: {fmt(cycle)} ms per run in a slot "
              f"({flow_app.LIMIT} / {fmt(rate)} runs/s), of which {fmt(held['mean'])} ms task "
              f"-> final report; the other {fmt(cycle - held['mean'])} ms: the report's way "
              f"to the fold and the next task's dispatch")
    if "error" in r:
        print(f"      ({r['error']}; once the engine had caught up {r.get('catch_up')}: "
              f"{r.get('late')})")
        for run_id, status in list((r.get("unseen_runs") or {}).items())[:5]:
            print(f"      unseen by the observer: run {run_id}: engine says {status}")
    if variant != "plain" and base is not None and "p99_ms" in base:
        o = overhead(base, r)
        print(f"      overhead vs no flow control: runs/s {_pct(o['runs_pct'])}, p50 "
              f"{_pct(o['p50_pct'])}, p99 {_pct(o['p99_pct'])}; limit held: "
              f"{'yes' if o['limit_held'] else 'NOT SHOWN'} ({flight.get('passes')} passes "
              f"read back for {r['completed']} runs completed) -> "
              f"{'PASS' if o['ok'] else 'FAIL'} (floor {FLOOR_OVERHEAD_PCT:g} %)")


def summary_rows(r: dict[str, Any]) -> list[list[str]]:
    """Rows for bench.all's summary table: benchmark, stepstream, peer (the same run
    without flow control), floor, met."""
    base = r["variants"].get("plain") or {}
    rows: list[list[str]] = []
    for variant in ("keys", "hot"):
        res = r["variants"].get(variant) or {}
        what = (f"flow {r['rate']:g}/s, " + ("1 hot key" if variant == "hot"
                                             else f"{r['keys']:,} keys")
                + " (peer: no flow control)")
        if "p99_ms" not in res or "p99_ms" not in base:
            rows.append([what, "error" if "p99_ms" not in res else "-",
                         "error" if "p99_ms" not in base else "-", "-", "FAIL"])
            continue
        o = overhead(base, res)
        met = "ok" if o["ok"] else "FAIL"
        rows.append([f"{what}: runs/s (overhead)",
                     f"{fmt(res.get('sustained_rate'))} ({_pct(o['runs_pct'])})",
                     fmt(base.get("sustained_rate")), f"<= {FLOOR_OVERHEAD_PCT:g} %", met])
        rows.append([f"{what}: p50 / p99 ms (p99 overhead)",
                     f"{fmt(res['p50_ms'])} / {fmt(res['p99_ms'])} ({_pct(o['p99_pct'])})",
                     f"{fmt(base['p50_ms'])} / {fmt(base['p99_ms'])}",
                     f"<= {FLOOR_OVERHEAD_PCT:g} %", met])
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def _cpu(r: dict[str, Any]) -> str:
    cpu = r.get("cpu") or {}
    return ", ".join(f"{k} {fmt(cpu.get(f'{k}_cpu_pct'), '%')}"
                     for k in ("engine", "worker", "broker"))
