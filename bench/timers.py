"""Benchmark: how late durable timers fire, stepstream beside a Faust peer.

``python -m bench.timers`` (``--quick``, ``-n``, ``--window``, ``--lead``; ``--help``).

N runs (10,000) of one function, each ``await ctx.step.sleep_until("nap", due)`` with
its due time taken from the event's data, then a step ``woke`` that runs on the
worker. The due times are spread evenly over one window (60 s) that opens ``lead``
seconds after the first send, enough for every run to reach its sleep first (the
output says how many did not). Two figures per run:

- timer lateness: the engine's ``timer.fired`` time minus the due time (the
  ``late_ms`` of the run state's ``timer.fired`` timeline entry). Read back from the
  ``runs`` log, which the state is folded from; a sample of runs is checked against
  ``GET /v1/runs/{id}`` on the engine's HTTP API and must agree;
- end to end: when the ``woke`` step began on the worker (worker clock) minus the due
  time: the timer hop, the fold, the task hop and the worker's replay.

The peer, measured in the same invocation on the same broker (one after the other, so
neither competes with the other for the 2 cores), is what a Faust user writes for
10k per-key timers: an agent stores each event's due time in a ``rocksdb://`` table,
an ``app.timer`` every 100 ms scans the table for due entries (skipped while the
earliest known due time is in the future) and sends each due key to a ``fired`` topic
on its own partition, where a second agent deletes the entry (tables may only be
changed from a stream) and runs the same ``woke`` step. Lateness: scan time minus due
time, and woke-step time minus due time. It is started as
``python -m bench.timers faust-peer`` (settings from ``BENCH_FAUST_*`` variables);
:mod:`bench.holding` uses the same peer with far-future due times.

All processes share this machine's clock.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack

from bench.common import (
    CpuMeter,
    Observer,
    completed_run_id,
    cpu_shares,
    fmt,
    now_ms,
    read_topics,
    send_chunked,
    stats,
    warm_up,
)
from bench.faust_timers import start_faust_peer
from bench.launch import Stepstream, bench_pids, section_broker, start_stepstream
from bench.runs import probe_run
from bench.timer_app import APP_ID, FN_ID, WOKE_STEP, nap_event
from topics.catalog import Catalog
from topics.ids import run_id_for

# --- the benchmark ----------------------------------------------------------------------


def _schedule(n: int, start_ms: int, window_ms: int) -> list[int]:
    """``n`` due times spread evenly over ``window_ms`` from ``start_ms``."""
    return [start_ms + (i * window_ms) // n for i in range(n)]


def run_ours(broker: str, *, n: int, window_s: float, lead_s: float, partitions: int,
             concurrency: int, drain_s: float, work: Path, api_sample: int = 200
             ) -> dict[str, Any]:
    s = start_stepstream(broker, partitions, work, "bench.timer_app:client", concurrency, "timers")
    try:
        done = Observer(s.settings, Catalog(s.settings).runs, completed_run_id)
        s.observers.append(done)
        sender = s.sender
        assert sender is not None
        tag = "warm-" + uuid.uuid4().hex[:6]

        def send_warm(i: int) -> str:
            now = now_ms()
            ev = nap_event(tag, i, now, now)
            sender.send_sync(ev)
            return run_id_for(f"{APP_ID}-{FN_ID}", ev.id or "", now)

        warm = warm_up(send_warm, lambda k: k in done.seen, s.check_alive, "stepstream")
        return _measure_ours(s, done, n=n, window_s=window_s, lead_s=lead_s,
                             drain_s=drain_s, api_sample=api_sample, warm_s=warm)
    finally:
        s.close()


def _measure_ours(s: Stepstream, done: Observer, *, n: int, window_s: float, lead_s: float,
                  drain_s: float, api_sample: int, warm_s: float) -> dict[str, Any]:
    assert s.sender is not None
    fn = f"{APP_ID}-{FN_ID}"
    tag = "nap-" + uuid.uuid4().hex[:6]
    t0 = now_ms()
    window_start = t0 + int(lead_s * 1000)
    dues = _schedule(n, window_start, int(window_s * 1000))
    events = [nap_event(tag, i, due, t0) for i, due in enumerate(dues)]
    due_by_run = {run_id_for(fn, e.id or "", t0): due for e, due in zip(events, dues,
                                                                          strict=True)}
    send_s = send_chunked(s.sender, events)
    meter = CpuMeter(bench_pids(s.children))
    _sleep_until_ms(window_start)
    meter.start()
    _await_all(done, due_by_run, window_start + window_s * 1000, drain_s, s.check_alive)
    cpu = meter.stop()
    with done.lock:
        completed = sum(1 for r in due_by_run if r in done.seen)

    # Read the ``runs`` log back: timer.fired records, sleep reports, woke steps.
    fired: dict[str, tuple[int, int]] = {}
    parked_at: dict[str, int] = {}
    woke_at: dict[str, int] = {}
    for m in read_topics(s.settings, [Catalog(s.settings).runs]):
        value = m.value()
        if value is None:
            continue
        body = msgpack.unpackb(value, raw=False)
        run_id = body.get("run_id")
        if run_id not in due_by_run:
            continue
        kind = body.get("k")
        if kind == "timer.fired":
            fired.setdefault(run_id, (int(body["due_ms"]), int(body["ts"])))
        elif kind == "outcomes.reported":
            for o in body.get("outcomes") or ():
                if o.get("op") == "step.sleep":
                    parked_at.setdefault(run_id, m.timestamp()[1])
                elif o.get("op") == "step.completed" and o.get("step_id") == WOKE_STEP:
                    woke_at.setdefault(run_id, int(o.get("started_at") or o.get("output")))
    timer_late = [ts - due for due, ts in fired.values()]
    e2e_late = [woke_at[r] - due_by_run[r] for r in woke_at]
    parked_late = sum(1 for r, at in parked_at.items() if at > due_by_run[r])
    early = sum(1 for due, ts in fired.values() if ts < due)
    out: dict[str, Any] = {
        "runs": n, "completed": completed, "send_s": round(send_s, 2),
        "window_s": window_s, "lead_s": lead_s, "warm_up_s": round(warm_s, 2),
        "parked": len(parked_at), "parked_after_due": parked_late,
        "last_parked_s": round((max(parked_at.values()) - t0) / 1000, 2) if parked_at else None,
        "fired": len(fired), "fired_early": early,
        "timer_late_ms": stats(timer_late), "e2e_late_ms": stats(e2e_late),
        "cpu": cpu, "prefix": s.settings.prefix,
    }
    out["api_check"] = _api_check(s, fired, api_sample)
    if completed < n:
        out["error"] = f"{n - completed} of {n} runs not completed within {drain_s:g}s " \
                       "after the window"
        # What the engine says of each (a 404 from an error told apart): stuck, late, or
        # completed without the observer seeing it.
        with done.lock:
            unseen = [r for r in due_by_run if r not in done.seen]
        out["unseen_runs"] = {r: probe_run(s.api_port, r) + (
            f"; timer fired: {r in fired}, woke step: {r in woke_at}") for r in unseen[:20]}
    return out


def _api_check(s: Stepstream, fired: dict[str, tuple[int, int]], sample: int
               ) -> dict[str, Any]:
    """Compare the log's lateness with the run state's ``timer.fired`` entry (HTTP API)."""
    ids = random.Random(7).sample(sorted(fired), min(sample, len(fired)))
    agree = 0
    mismatches: list[str] = []
    for run_id in ids:
        try:
            run = s.api_get(f"/v1/runs/{run_id}")["data"]
        except Exception as exc:
            mismatches.append(f"{run_id}: {type(exc).__name__}")
            continue
        entry = next((e for e in run.get("timeline") or () if e.get("type") == "timer.fired"),
                     None)
        due, ts = fired[run_id]
        late = (entry or {}).get("detail", {}).get("late_ms")
        if late == ts - due:
            agree += 1
        elif len(mismatches) < 5:
            mismatches.append(f"{run_id}: api {late}, log {ts - due}")
    return {"sampled": len(ids), "agree": agree, "mismatches": mismatches}


def _sleep_until_ms(ms: int) -> None:
    delay = (ms - now_ms()) / 1000
    if delay > 0:
        time.sleep(delay)


def run_peer(broker: str, *, n: int, window_s: float, lead_s: float, partitions: int,
             drain_s: float, work: Path, scan_ms: int = 100) -> dict[str, Any]:
    peer = start_faust_peer(broker, partitions, work, scan_ms=scan_ms)
    try:
        assert peer.observer is not None
        done = peer.observer
        tag = "warm-" + uuid.uuid4().hex[:6]

        def send_warm(i: int) -> str:
            now = now_ms()
            ev = nap_event(tag, i, now, now)
            peer.sender.send_sync(ev)
            return ev.id or ""

        warm = warm_up(send_warm, lambda k: k in done.seen, peer.check_alive, "faust")
        tag = "nap-" + uuid.uuid4().hex[:6]
        t0 = now_ms()
        window_start = t0 + int(lead_s * 1000)
        dues = _schedule(n, window_start, int(window_s * 1000))
        events = [nap_event(tag, i, due, t0) for i, due in enumerate(dues)]
        due_by_id = {e.id or "": due for e, due in zip(events, dues, strict=True)}
        send_s = send_chunked(peer.sender, events)
        meter = CpuMeter(bench_pids([peer.child]))
        _sleep_until_ms(window_start)
        parked_by_window = peer.stats().get("parked_by_tag", {}).get(tag, 0)
        meter.start()
        _await_all(done, due_by_id, window_start + window_s * 1000, drain_s,
                   peer.check_alive)
        cpu = meter.stop()
        fired_late: list[float] = []
        e2e_late: list[float] = []
        for m in read_topics(peer.settings, [peer.settings.prefix + "done"]):
            value = m.value()
            body = msgpack.unpackb(value, raw=False) if value else {}
            if body.get("id") in due_by_id:
                fired_late.append(body["fired"] - body["due"])
                e2e_late.append(body["woke"] - body["due"])
        st = peer.stats()
        out: dict[str, Any] = {
            "runs": n, "completed": len(e2e_late), "send_s": round(send_s, 2),
            "warm_up_s": round(warm, 2), "parked_by_window_start": parked_by_window,
            "timer_late_ms": stats(fired_late), "e2e_late_ms": stats(e2e_late),
            "scan_ms_p50": st.get("scan_ms_p50"), "scan_ms_max": st.get("scan_ms_max"),
            "scans": st.get("scans"), "store": st.get("store"), "scan_every_ms": scan_ms,
            "cpu": cpu, "prefix": peer.settings.prefix,
        }
        if len(e2e_late) < n:
            out["error"] = f"{n - len(e2e_late)} of {n} timers not done within {drain_s:g}s"
        return out
    finally:
        peer.close()


def bench_timers(broker: str, *, n: int = 10_000, window_s: float = 60.0,
                 lead_s: float | None = None, partitions: int = 8, peer: bool = True,
                 concurrency: int = 100, drain_s: float = 30.0) -> dict[str, Any]:
    """Both systems, one after the other, on ``broker``."""
    # Long enough for every run to reach its sleep before the window opens (stepstream
    # parked ~3,000 runs/s here; checked: ``parked_after_due``).
    lead = lead_s if lead_s is not None else 10.0 + n / 1000
    out: dict[str, Any] = {"n": n, "window_s": window_s, "lead_s": lead}
    with tempfile.TemporaryDirectory(prefix="stepstream-bench-timers-") as tmp:
        work = Path(tmp)
        try:
            out["ours"] = run_ours(broker, n=n, window_s=window_s, lead_s=lead,
                                   partitions=partitions, concurrency=concurrency,
                                   drain_s=drain_s, work=work / "ours")
        except Exception as exc:
            logging.exception("stepstream timers failed")
            out["ours"] = {"error": f"{type(exc).__name__}: {exc}"}
        if peer:
            try:
                out["peer"] = run_peer(broker, n=n, window_s=window_s, lead_s=lead,
                                       partitions=partitions, drain_s=drain_s,
                                       work=work / "peer")
            except Exception as exc:
                logging.exception("faust timers failed")
                out["peer"] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    return out


def _await_all(done: Any, keys: Any, window_end_ms: float, drain_s: float,
               check_alive: Any) -> None:
    """Until every key has woken (``done.seen``), or ``drain_s`` after the window ends;
    a dead child process fails the benchmark at once."""
    deadline = time.monotonic() + (window_end_ms - now_ms()) / 1000 + drain_s
    while time.monotonic() < deadline:
        with done.lock:
            if all(k in done.seen for k in keys):
                return
        check_alive()
        time.sleep(0.2)


def print_timers(r: dict[str, Any]) -> None:
    for name, res in (("stepstream", r.get("ours")),
                      ("faust rocksdb table + 100 ms app.timer scan", r.get("peer"))):
        if res is None:
            continue
        if "unavailable" in res:
            print(f"  peer unavailable: {res['unavailable']}")
            continue
        if "timer_late_ms" not in res:
            print(f"  {name}: ERROR {res.get('error')}")
            continue
        tl, el = res["timer_late_ms"], res["e2e_late_ms"]
        print(f"  {name}: {res['completed']}/{res['runs']} woke")
        print(f"    timer fired late  p50 {fmt(tl['p50'], ' ms')}, p95 {fmt(tl['p95'], ' ms')}, "
              f"p99 {fmt(tl['p99'], ' ms')}, max {fmt(tl['max'], ' ms')}")
        print(f"    next step began   p50 {fmt(el['p50'], ' ms')}, p95 {fmt(el['p95'], ' ms')}, "
              f"p99 {fmt(el['p99'], ' ms')}, max {fmt(el['max'], ' ms')}")
        if "parked" in res:
            api = res.get("api_check") or {}
            print(f"    parked {res['parked']} (last {fmt(res.get('last_parked_s'), ' s')} "
                  f"after the first send; {res['parked_after_due']} after their due time); "
                  f"fired early: {res['fired_early']}; HTTP API agrees on "
                  f"{api.get('agree')}/{api.get('sampled')} sampled runs")
            for mm in api.get("mismatches") or ():
                print(f"      {mm}")
        else:
            print(f"    parked by window start: {res.get('parked_by_window_start')}; "
                  f"table scan p50 {fmt(res.get('scan_ms_p50'), ' ms')}, max "
                  f"{fmt(res.get('scan_ms_max'), ' ms')} ({res.get('scans')} scans)")
        if shares := cpu_shares(res.get("cpu")):
            print(f"    CPU during the window: {shares}")
        if "error" in res:
            print(f"    ({res['error']})")
        for run_id, status in (res.get("unseen_runs") or {}).items():
            print(f"    unseen by the observer: run {run_id}: engine says {status}")


def summary_rows(r: dict[str, Any]) -> list[list[str]]:
    """Rows for bench.all's summary table: benchmark, stepstream, peer, floor, met."""
    ours, peer = r.get("ours") or {}, r.get("peer")

    def cell(res: dict[str, Any] | None, key: str, q: str) -> str:
        if res is None:
            return "-"
        if "unavailable" in res:
            return "unavailable"
        return fmt((res.get(key) or {}).get(q), "") if key in res else "error"

    what = f"{r.get('n')} timers in {r.get('window_s'):g} s"
    p99 = (ours.get("timer_late_ms") or {}).get("p99")
    met = "-" if p99 is None or math.isnan(p99) else ("ok" if p99 < 1000 else "FAIL")
    if ours.get("completed") != ours.get("runs"):
        met = "FAIL"
    return [
        [f"{what}: fired late p50 ms", cell(ours, "timer_late_ms", "p50"),
         cell(peer, "timer_late_ms", "p50"), "-", ""],
        [f"{what}: fired late p99 ms", cell(ours, "timer_late_ms", "p99"),
         cell(peer, "timer_late_ms", "p99"), "< 1000", met],
        [f"{what}: next step p99 ms", cell(ours, "e2e_late_ms", "p99"),
         cell(peer, "e2e_late_ms", "p99"), "-", ""],
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.timers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 timers over 10 s")
    p.add_argument("-n", "--timers", type=int, help="runs/timers (10000; quick 1000)")
    p.add_argument("--window", type=float, help="seconds the due times span (60; quick 10)")
    p.add_argument("--lead", type=float,
                   help="seconds from the first send to the window (10 + n/1000)")
    p.add_argument("--drain", type=float, default=30.0,
                   help="seconds to wait for the last runs after the window (30)")
    p.add_argument("--concurrency", type=int, default=100, help="worker concurrency (100)")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--no-peer", action="store_true", help="skip the Faust peer")
    p.add_argument("--broker", help="use this broker instead of a fresh dev broker")
    args = p.parse_args(argv)
    args.timers = args.timers or (1000 if args.quick else 10_000)
    args.window = args.window or (10.0 if args.quick else 60.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"== timers: {args.timers} runs sleeping until due times spread over "
          f"{args.window:g} s", flush=True)
    with section_broker(args.broker) as broker:
        r = bench_timers(broker, n=args.timers, window_s=args.window, lead_s=args.lead,
                         partitions=args.partitions, peer=not args.no_peer,
                         concurrency=args.concurrency, drain_s=args.drain)
    print_timers(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
