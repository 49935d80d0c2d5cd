"""``python -m bench.all``: every benchmark, stepstream and its peer, on a shared dev broker.

1. fold rate: the engine's processor loop over a pre-produced ``runs`` history, and a
   faust-streaming agent with a RocksDB table over the same topic (records/s);
2. burst: N events sent at once, 3-step runs completed per second;
3. latency: 3-step runs at fixed offered rates (open loop), p50/p99 end to end;
4. timers: 10k runs sleeping until due times spread over one minute, how late each
   timer fired and the step after it began (:mod:`bench.timers`);
5. holding: 100k runs parked on a sleep of a day, then 100k waiting for an event, the
   engine's RSS and state on disk (:mod:`bench.holding`);
6. flow: 3-step runs at one offered rate without flow control, with a concurrency limit
   of 10 over 1,000 keys and over one hot key; the overhead (:mod:`bench.flow`);
7. batch: 100k events into ``Batch(max_size=100, timeout="1s")`` and without batching,
   events/s absorbed, runs/s, acceptance -> run start (:mod:`bench.batch`);
8. metrics: the engine's added CPU for metrics at 500 runs/s, beside metrics off
   (:mod:`bench.metrics`);
9. dashboard: the runs page's first page with 10,000 runs stored (:mod:`bench.dashboard`);
10. scale: {1, 2} engines x {1, 3} workers, burst and sustained runs/s (:mod:`bench.scale`).
11. restore: one partition with 1M finished and 1k live runs, full re-fold vs snapshot
    + history (:mod:`bench.restore`).

Peers run in the same invocation on the same broker. Figures are printed as they come,
then a summary table; all of them go to ``bench/results.json``. ``--quick`` is a short
smoke run (its figures are noisy).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import cpu_shares, fmt, jsonable, run_meta
from bench.launch import ROOT, section_broker

RESULTS = ROOT / "bench" / "results.json"

# Floors of issue 9 (stricter than the design brief's).
FLOOR_FOLD = 40_000
FLOOR_SUSTAINED = 500  # from this offered rate up, the offered rate must be sustained
FLOOR_P99_AT_500 = 500.0  # p99 from 500 runs/s up
FLOOR_P50_AT_100 = 30.0
FLOOR_P99_AT_100 = 150.0
FLOOR_BURST = 2500  # runs/s, for a burst of FLOOR_BURST_SIZE runs or more
FLOOR_BURST_SIZE = 10_000
FLOOR_DBOS_RATIO = 10.0  # stepstream's best sustained runs/s over DBOS's

SECTIONS = ("fold", "burst", "latency", "timers", "holding", "flow", "batch", "dashboard",
            "metrics", "scale", "restore")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short smoke run: small history, small burst, 5 s per rate")
    p.add_argument("--only", choices=SECTIONS, action="append",
                   help="run only these benchmarks (repeatable)")
    p.add_argument("--no-peer", action="store_true", help="skip the peers (Faust, DBOS)")
    p.add_argument("--broker", help="use this broker instead of starting a dev broker")
    p.add_argument("--partitions", type=int, default=8, help="partitions per topic (8)")
    p.add_argument("--fold-runs", type=int,
                   help="runs in the fold history, 5 records each (20000; quick 4000)")
    p.add_argument("--burst", type=int, help="events sent at once (10000; quick 300)")
    p.add_argument("--rates", default="100,500,1000:60",
                   help="offered rates in runs/s, comma-separated, each with its own "
                        "seconds of sending after a colon (100,500,1000:60)")
    p.add_argument("--duration", type=float,
                   help="seconds of sending per rate without its own (25; quick: every "
                        "rate 5)")
    p.add_argument("--drain", type=float, default=30.0,
                   help="seconds to wait for the last runs after sending (30)")
    p.add_argument("--concurrency", default="100,2000",
                   help="worker concurrency values to measure stepstream at, comma-"
                        "separated (100 = the SDK default, 2000 = no fetch pausing)")
    p.add_argument("--timers", type=int, help="runs in the timer benchmark (10000; quick 1000)")
    p.add_argument("--timer-window", type=float,
                   help="seconds their due times span (60; quick 10)")
    p.add_argument("--holding", type=int, help="runs parked per holding variant "
                                               "(100000; quick 10000)")
    p.add_argument("--holding-variants", default="sleep,wait",
                   help="holding variants, comma-separated (sleep,wait)")
    p.add_argument("--flow-rate", type=float, default=300.0,
                   help="offered runs/s of the flow section, every variant (300)")
    p.add_argument("--flow-duration", type=float,
                   help="seconds of sending per flow variant (60; quick 10)")
    p.add_argument("--flow-keys", type=int, default=1000, help="distinct keys (1000)")
    p.add_argument("--flow-concurrency", type=int, default=100,
                   help="worker concurrency in the flow section (100)")
    p.add_argument("--flow-drain", type=float, default=300.0, help="seconds to wait for a "
                   "flow variant's last runs, a hot key's backlog included (300)")
    p.add_argument("--batch-events", type=int,
                   help="events sent in the batch section (100000; quick 5000)")
    p.add_argument("--metrics-duration", type=float,
                   help="seconds at 500 runs/s per metrics setting, off and on (30; quick 5;"
                        " 0: the in-process measurement only)")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help=f"where to write the figures ({RESULTS.relative_to(ROOT)})")
    args = p.parse_args(argv)
    args.fold_runs = args.fold_runs or (4000 if args.quick else 20_000)
    args.burst = args.burst or (300 if args.quick else FLOOR_BURST_SIZE)
    args.duration = args.duration or (5.0 if args.quick else 25.0)
    args.rate_list = []
    for spec in filter(None, (r.strip() for r in args.rates.split(","))):
        rate, _, seconds = spec.partition(":")
        own = float(seconds) if seconds and not args.quick else args.duration
        args.rate_list.append((float(rate), own))
    args.concurrency_list = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.timers = args.timers or (1000 if args.quick else 10_000)
    args.timer_window = args.timer_window or (10.0 if args.quick else 60.0)
    args.holding = args.holding or (10_000 if args.quick else 100_000)
    args.holding_variant_list = [v for v in args.holding_variants.split(",") if v.strip()]
    args.flow_duration = args.flow_duration or (10.0 if args.quick else 60.0)
    args.batch_events = args.batch_events or (5000 if args.quick else 100_000)
    args.metrics_duration = ((5.0 if args.quick else 30.0) if args.metrics_duration is None
                             else args.metrics_duration)
    args.only = set(args.only or SECTIONS)
    return args


def _guard(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{what} failed: {type(exc).__name__}: {exc}"}


def _peer_note(r: dict[str, Any] | None) -> str | None:
    if r is None:
        return None
    if "unavailable" in r:
        return f"peer unavailable: {r['unavailable']}"
    return None


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    from bench.fold_rate import bench_fold_rate
    from bench.runs import bench_burst, bench_latency

    def on_fresh_broker(run: Callable[[str], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            with section_broker(args.broker) as broker:
                return run(broker)
        return go

    peer = not args.no_peer
    out: dict[str, Any] = {}
    if "fold" in args.only:
        print(f"\n== 1. fold rate: {args.fold_runs} runs x 5 records", flush=True)
        r = _guard("fold rate", on_fresh_broker(lambda broker: bench_fold_rate(
            broker, runs=args.fold_runs, partitions=args.partitions, peer=peer)))
        out["fold"] = r
        _print_fold(r)
    if "burst" in args.only:
        out["burst"] = {}
        for c in args.concurrency_list:
            print(f"\n== 2. burst: {args.burst} events at once (worker concurrency {c})",
                  flush=True)
            with_peer = peer and c == args.concurrency_list[0]
            r = _guard("burst", on_fresh_broker(functools.partial(
                bench_burst, n=args.burst, partitions=args.partitions, concurrency=c,
                peer=with_peer, timeout=max(120.0, args.burst / 10))))
            out["burst"][f"c{c}"] = r.get("ours", r)
            for key in ("peer", "dbos"):
                if key in r:
                    out["burst"][key] = r[key]
            _print_runs(r, "burst", c)
    if "latency" in args.only:
        out["latency"] = {}
        for rate, duration in args.rate_list:
            key = f"{rate:g}"
            out["latency"][key] = {}
            for c in args.concurrency_list:
                print(f"\n== 3. latency at {rate:g} runs/s for {duration:g} s "
                      f"(worker concurrency {c})", flush=True)
                with_peer = peer and c == args.concurrency_list[0]
                r = _guard("latency", on_fresh_broker(functools.partial(
                    bench_latency, rate=rate, duration=duration,
                    partitions=args.partitions, concurrency=c, peer=with_peer,
                    drain=args.drain)))
                out["latency"][key][f"c{c}"] = r.get("ours", r)
                for peer_key in ("peer", "dbos"):
                    if peer_key in r:
                        out["latency"][key][peer_key] = r[peer_key]
                _print_runs(r, "latency", c)
    if "timers" in args.only:
        from bench.timers import bench_timers, print_timers

        print(f"\n== 4. timers: {args.timers} runs sleeping until due times spread over "
              f"{args.timer_window:g} s", flush=True)
        r = _guard("timers", on_fresh_broker(lambda broker: bench_timers(
            broker, n=args.timers, window_s=args.timer_window, partitions=args.partitions,
            peer=peer)))
        out["timers"] = r
        if "error" in r:
            print(f"  ERROR: {r['error']}")
        else:
            print_timers(r)
    if "holding" in args.only:
        from bench.holding import bench_holding, print_holding

        out["holding"] = {}
        for variant in args.holding_variant_list:
            print(f"\n== 5. holding: {args.holding} runs parked ({variant})", flush=True)
            r = _guard("holding", on_fresh_broker(functools.partial(
                bench_holding, n=args.holding, variant=variant, partitions=args.partitions,
                peer=peer)))
            out["holding"][variant] = r
            if "error" in r:
                print(f"  ERROR: {r['error']}")
            else:
                print_holding(r)
    if "flow" in args.only:
        from bench.flow import bench_flow

        print(f"\n== 6. flow control: {args.flow_rate:g} runs/s for {args.flow_duration:g} s "
              f"each (worker concurrency {args.flow_concurrency})", flush=True)
        out["flow"] = _guard("flow", lambda: bench_flow(
            args.broker, rate=args.flow_rate, duration=args.flow_duration,
            partitions=args.partitions, concurrency=args.flow_concurrency,
            keys=args.flow_keys, drain=args.flow_drain))
    if "batch" in args.only:
        from bench.batch import bench_batch

        print(f"\n== 7. batching: {args.batch_events} events at once", flush=True)
        out["batch"] = _guard("batch", lambda: bench_batch(
            args.broker, n=args.batch_events, partitions=args.partitions,
            concurrency=args.concurrency_list[0]))
    if "dashboard" in args.only:
        from bench.dashboard import bench_dashboard_section
        out["dashboard"] = _guard("dashboard", bench_dashboard_section)
    if "metrics" in args.only:
        from bench.metrics import bench_metrics_section
        out["metrics"] = _guard("metrics", functools.partial(bench_metrics_section, args))
    if "scale" in args.only:
        from bench.scale import bench_scale_section
        out["scale"] = _guard("scale", functools.partial(bench_scale_section, args))
    if "restore" in args.only:
        from bench.restore import bench_restore_section
        out["restore"] = _guard("restore", functools.partial(bench_restore_section, args))
    return out


def _print_fold(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"  ERROR: {r['error']}")
        return
    h = r["history"]
    print(f"  history: {h['records']} records, {h['bytes'] / 1e6:.1f} MB, "
          f"{r['partitions']} partitions (produced in {h['produce_s']} s)")
    o = r["ours"]
    print(f"  stepstream processor: {fmt(o['rate'])} records/s ({o['records']} records in "
          f"{o['elapsed_s']:.2f} s; start to first record {o['startup_s']:.1f} s; CPU "
          f"{fmt(o.get('cpu_pct'), '%')}, broker CPU {fmt(o.get('broker_cpu_pct'), '%')})")
    p = r.get("peer")
    if p is not None:
        note = _peer_note(p)
        if note:
            print(f"  {note}")
        else:
            print(f"  faust agent + {p['store']} table ({p.get('table_driver')}): "
                  f"{fmt(p['rate'])} records/s ({p['records']} records in "
                  f"{p['elapsed_s']:.2f} s; start to first record {p['startup_s']:.1f} s; "
                  f"CPU {fmt(p.get('cpu_pct'), '%')}; fold errors {p['errors']})")


def _print_runs(r: dict[str, Any], kind: str, c: int) -> None:
    if "error" in r:
        print(f"  ERROR: {r['error']}")
        return
    for name, res in (("stepstream", r.get("ours")), ("faust pipeline", r.get("peer")),
                      ("dbos workflow", r.get("dbos"))):
        if res is None:
            continue
        label = f"{name} (c={c})" if name == "stepstream" else name
        note = _peer_note(res)
        if note:
            print(f"  {note}")
            continue
        if "error" in res and "completed" not in res:
            print(f"  {label}: ERROR {res['error']}")
            continue
        if kind == "burst":
            ttc = res.get("time_to_complete_ms", {})
            print(f"  {label}: {fmt(res.get('rate'))} runs/s ({res['completed']}/"
                  f"{res['runs']} in {fmt(res.get('elapsed_s'))} s; time to complete "
                  f"p50 {fmt(ttc.get('p50'), ' ms')}, p99 {fmt(ttc.get('p99'), ' ms')})")
        else:
            print(f"  {label}: p50 {fmt(res['p50_ms'], ' ms')}, p99 "
                  f"{fmt(res['p99_ms'], ' ms')}, max {fmt(res['max_ms'], ' ms')}; "
                  f"sustained {fmt(res.get('sustained_rate'))} runs/s "
                  f"({res['completed']}/{res['runs']} completed)")
        if work := res.get("work"):
            print(f"    per run: {fmt(work.get('records_per_run'))} records "
                  f"{work.get('records_by_topic')}, "
                  f"{fmt(work.get('produce_requests_per_run'))} produce requests "
                  f"(engine {work.get('engine_produce_requests')}, worker "
                  f"{work.get('worker_produce_requests')} in all)")
        if shares := cpu_shares(res.get("cpu")):
            print(f"    CPU while measuring: {shares}")
        if "error" in res:
            print(f"    ({res['error']})")
        if res.get("sends_not_acknowledged"):
            print(f"    ({res['sends_not_acknowledged']} events not acknowledged to the sender: "
                  "not expected to run, not counted)")
        if "late" in res:
            print(f"    once the engine had caught up {res.get('catch_up')}: {res['late']}")
        for run_id, status in (res.get("unseen_runs") or {}).items():
            print(f"    unseen by the observer: run {run_id}: engine says {status}")


# --- summary -------------------------------------------------------------------------


def summary_rows(results: dict[str, Any], args: argparse.Namespace) -> list[list[str]]:
    """Rows of benchmark, stepstream, faust peer, dbos peer, floor, floor met."""
    rows: list[list[str]] = []

    def peer_cell(p: dict[str, Any] | None, value: Callable[[dict[str, Any]], str]) -> str:
        if p is None:
            return "-"
        if "unavailable" in p:
            return "unavailable"
        return value(p)

    fold = results.get("fold")
    if fold is not None:
        if "error" in fold:
            rows.append(["fold rate (records/s)", "error", "-", "-", f">= {FLOOR_FOLD:,}",
                         "FAIL"])
        else:
            rate = fold["ours"]["rate"]
            rows.append(["fold rate (records/s)", fmt(rate),
                         peer_cell(fold.get("peer"), lambda p: fmt(p["rate"])), "-",
                         f">= {FLOOR_FOLD:,}", "ok" if rate >= FLOOR_FOLD else "FAIL"])
    burst = results.get("burst")
    if burst is not None:
        for c in args.concurrency_list:
            r = burst.get(f"c{c}", {})
            floor = ["-", ""]
            if args.burst >= FLOOR_BURST_SIZE and c == args.concurrency_list[0]:
                ok = r.get("completed") == r.get("runs") and (r.get("rate") or 0) >= FLOOR_BURST
                floor = [f">= {FLOOR_BURST:,}", "ok" if ok else "FAIL"]
            rows.append([f"burst {args.burst} runs/s (c={c})",
                         fmt(r.get("rate")) if "rate" in r else "error",
                         peer_cell(burst.get("peer"), lambda p: fmt(p.get("rate"))),
                         peer_cell(burst.get("dbos"), lambda p: fmt(p.get("rate"))), *floor])
            rows.extend(work_rows(r, c))
    latency = results.get("latency")
    if latency is not None:
        for key, by_c in latency.items():
            rate = float(key)
            peer, dbos = by_c.get("peer"), by_c.get("dbos")
            for c in args.concurrency_list:
                r = by_c.get(f"c{c}", {})
                if "p50_ms" not in r:
                    rows.append([f"{key}/s (c={c})", "error", "-", "-", "-", "FAIL"])
                    continue
                for name, field, floor in (("p50 ms", "p50_ms", _floor_p50(rate, r)),
                                           ("p99 ms", "p99_ms", _floor_p99(rate, r))):
                    rows.append([f"{key}/s {name} (c={c})", fmt(r[field]),
                                 peer_cell(peer, lambda p, f=field: fmt(p.get(f))),
                                 peer_cell(dbos, lambda p, f=field: fmt(p.get(f))), *floor])
                rows.append([f"{key}/s sustained runs/s (c={c})",
                             fmt(r.get("sustained_rate")),
                             peer_cell(peer, lambda p: fmt(p.get("sustained_rate"))),
                             peer_cell(dbos, lambda p: fmt(p.get("sustained_rate"))),
                             *_floor_sustained(rate, r)])
                rows.append([f"{key}/s broker CPU % (c={c})", _broker_cpu(r),
                             peer_cell(peer, _broker_cpu), peer_cell(dbos, _broker_cpu),
                             "-", ""])
        rows.extend(dbos_ratio_rows(latency, args.concurrency_list[0]))
    timers = results.get("timers")
    if timers is not None:
        from bench import timers as timers_bench

        if "error" in timers:
            rows.append(["timers", "error", "-", "-", "FAIL"])
        else:
            rows.extend(timers_bench.summary_rows(timers))
    for variant, held in (results.get("holding") or {}).items():
        from bench import holding as holding_bench

        if "error" in held:
            rows.append([f"holding ({variant})", "error", "-", "-", "FAIL"])
        else:
            rows.extend(holding_bench.summary_rows(held))
    if (flow := results.get("flow")) is not None:
        from bench import flow as flow_bench

        rows.extend([["flow", "error", "-", "-", "FAIL"]] if "error" in flow
                    else flow_bench.summary_rows(flow))
    if (batch := results.get("batch")) is not None:
        from bench import batch as batch_bench

        rows.extend([["batch", "error", "-", "-", "FAIL"]] if "error" in batch
                    else batch_bench.summary_rows(batch))
    # Rows of the timer and holding modules have no DBOS column: none is measured there.
    return [r if len(r) == 6 else [*r[:3], "-", *r[3:]] for r in rows]


def work_rows(r: dict[str, Any], c: int) -> list[list[str]]:
    """Records and produce requests per 3-step run in a burst (:mod:`bench.work`)."""
    work = r.get("work")
    if not work:
        return []
    return [[f"  records per run (c={c})", fmt(work.get("records_per_run")), "-", "-", "-", ""],
            [f"  produce requests per run (c={c})",
             fmt(work.get("produce_requests_per_run")), "-", "-", "-", ""]]


def dbos_ratio_rows(latency: dict[str, Any], c: int) -> list[list[str]]:
    """stepstream's sustained runs/s over DBOS's, at each offered rate and at the best
    each reached (the floor: at least FLOOR_DBOS_RATIO times)."""
    rows: list[list[str]] = []
    best_ours = best_dbos = 0.0
    for key, by_c in latency.items():
        ours = (by_c.get(f"c{c}") or {}).get("sustained_rate")
        dbos = (by_c.get("dbos") or {}).get("sustained_rate")
        if not ours or not dbos:
            continue
        best_ours, best_dbos = max(best_ours, ours), max(best_dbos, dbos)
        rows.append([f"{key}/s sustained: stepstream/DBOS (c={c})", f"{ours / dbos:.1f}x",
                     "-", "-", "-", ""])
    if best_dbos:
        ratio = best_ours / best_dbos
        rows.append([f"best sustained: stepstream/DBOS (c={c})", f"{ratio:.1f}x", "-", "-",
                     f">= {FLOOR_DBOS_RATIO:g}x", "ok" if ratio >= FLOOR_DBOS_RATIO else "FAIL"])
    return rows


def _broker_cpu(r: dict[str, Any]) -> str:
    return fmt((r.get("cpu") or {}).get("broker_cpu_pct"))


def _floor_p50(rate: float, r: dict[str, Any]) -> list[str]:
    if rate != 100:
        return ["-", ""]
    return [f"<= {FLOOR_P50_AT_100:g}", "ok" if r["p50_ms"] <= FLOOR_P50_AT_100 else "FAIL"]


def _floor_p99(rate: float, r: dict[str, Any]) -> list[str]:
    if rate == 100:
        return [f"<= {FLOOR_P99_AT_100:g}", "ok" if r["p99_ms"] <= FLOOR_P99_AT_100 else "FAIL"]
    if rate < FLOOR_SUSTAINED:
        return ["-", ""]
    return [f"< {FLOOR_P99_AT_500:g}", "ok" if r["p99_ms"] < FLOOR_P99_AT_500 else "FAIL"]


def _floor_sustained(rate: float, r: dict[str, Any]) -> list[str]:
    if rate < FLOOR_SUSTAINED:
        return ["-", ""]
    # Sustained means the offered rate completed (within 2 %) with every run done.
    ok = (r.get("completed") == r.get("runs")
          and (r.get("sustained_rate") or 0) >= rate * 0.98)
    return [f">= {rate:,.0f}", "ok" if ok else "FAIL"]


def print_table(rows: list[list[str]]) -> None:
    head = ["benchmark", "stepstream", "faust peer", "dbos peer", "floor", "floor met"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    print("\n== summary (same broker, same run)")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                    for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    print(line)
    for r in rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.time()
    meta = run_meta(args, argv)
    meta["broker"] = args.broker or "a fresh tansu dev broker per section (memory storage)"
    results = run_all(args)
    meta["elapsed_s"] = round(time.time() - started, 1)
    rows = summary_rows(results, args)
    print_table(rows)
    doc = {"meta": meta, "results": results,
           "summary": [dict(zip(["benchmark", "stepstream", "faust_peer", "dbos_peer", "floor",
                                 "floor_met"], r, strict=True)) for r in rows]}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(jsonable(doc), indent=2) + "\n")
    print(f"\nfigures written to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
