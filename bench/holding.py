"""Benchmark: how many parked runs one engine process holds, and at what memory.

``python -m bench.holding`` (``--quick``, ``-n``, ``--variant``; ``--help``).

N runs (100,000) are started at once and each parks at once: variant ``sleep``
sleeps a day (``ctx.step.sleep_until``); variant ``wait`` waits up to a day for an
event with ``ctx.step.wait_for_event`` matched on a per-run key. One engine process
and one worker run as children. Measured:

- time to park: from the first send until the last run's report of its sleep (or
  wait) was produced; a sample of runs is then checked on the engine's HTTP API;
- the engine process's memory once everything is parked and its CPU has gone quiet:
  ``VmRSS`` (resident now) and ``VmHWM`` (the peak while parking) from /proc; and its
  state directory on disk (RocksDB, one database per partition).

The peer, in the same invocation on the same broker, is the Faust app of
:mod:`bench.timers` (a ``rocksdb://`` table with one entry per parked run, holding the
event, plus an ``app.timer`` that would fire them), given the same N events with due
times a day ahead: time until its table holds them all, its RSS, its data directory.
It is only run beside the ``sleep`` variant (to Faust, a waiting run would be the same
table entry).

The engine runs as ``python -m bench.engine_probe <engine CLI args>``: the shipped
engine's CLI, unchanged, plus an idle thread that, asked after the measurement, writes
where the memory is (decoded-state caches, RocksDB memtables) and what RSS is left
after giving each part back (``malloc_trim``, flushing memtables, emptying the caches).
``--state-memtable-mb`` and ``--state-block-cache-mb`` run it with other values of the
engine's own settings (``STEPSTREAM_STATE_MEMTABLE_MB``, ``..._BLOCK_CACHE_MB``). The
app is :mod:`bench.holding_app`; the peer is :mod:`bench.faust_timers`.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sdk
from bench.common import (
    CpuMeter,
    Observer,
    completed_run_id,
    cpu_seconds,
    cpu_shares,
    dir_size,
    fmt,
    now_ms,
    proc_memory,
    send_chunked,
    warm_up,
)
from bench.engine_probe import probe_env, request_diagnosis
from bench.faust_timers import start_faust_peer
from bench.holding_app import (
    APP_ID,
    NAP_EVENT,
    NAP_FN,
    RESUME_EVENT,
    WAIT_EVENT,
    WAIT_FN,
)
from bench.launch import Stepstream, bench_pids, section_broker, start_stepstream
from topics.catalog import Catalog
from topics.ids import run_id_for

DAY_MS = 86_400_000
TARGET_RSS_MB = 500.0


def parked_run_id(value: bytes) -> str | None:
    """The run id of an ``outcomes.reported`` record carrying a sleep or a wait."""
    if b"step.sleep" not in value and b"step.wait" not in value:
        return None
    import msgpack

    try:
        body = msgpack.unpackb(value, raw=False)
    except Exception:
        return None
    if not isinstance(body, dict) or body.get("k") != "outcomes.reported":
        return None
    if any(isinstance(o, dict) and o.get("op") in ("step.sleep", "step.wait")
           for o in body.get("outcomes") or ()):
        return str(body.get("run_id"))
    return None


class MemorySampler:
    """Samples a process's RSS every ``every`` seconds on a thread of its own."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self.t0 = time.monotonic()
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss = proc_memory(self.pid).get("rss_mb")
            if rss is not None:
                self.samples.append((time.monotonic() - self.t0, rss))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)


def settle(pid: int, *, quiet_pct: float = 5.0, window: float = 2.0, limit: float = 60.0
           ) -> float:
    """Wait until process ``pid`` uses under ``quiet_pct`` % CPU over ``window`` s (at
    most ``limit`` s); return the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        before = cpu_seconds(pid)
        time.sleep(window)
        after = cpu_seconds(pid)
        if before is None or after is None or 100 * (after - before) / window < quiet_pct:
            break
    return time.monotonic() - t0


# --- stepstream ---------------------------------------------------------------------------


def run_ours(broker: str, *, n: int, variant: str, partitions: int, concurrency: int,
             work: Path, memtable_mb: int | None = None, block_cache_mb: int | None = None,
             api_sample: int = 50) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    env = probe_env(work)
    # Other values of the engine's own settings, not a patched engine.
    for name, value in (("STEPSTREAM_STATE_MEMTABLE_MB", memtable_mb),
                        ("STEPSTREAM_STATE_BLOCK_CACHE_MB", block_cache_mb)):
        if value is not None:
            env[name] = str(value)
    s = start_stepstream(broker, partitions, work, "bench.holding_app:client", concurrency,
                         f"hold-{variant}", engine_module="bench.engine_probe",
                         engine_env=env)
    try:
        runs_topic = Catalog(s.settings).runs
        done = Observer(s.settings, runs_topic, completed_run_id)
        parked = Observer(s.settings, runs_topic, parked_run_id)
        s.observers += [done, parked]
        sender = s.sender
        assert sender is not None
        tag = "warm-" + uuid.uuid4().hex[:6]

        def send_warm(i: int) -> str:
            now = now_ms()
            ev = sdk.Event(name=NAP_EVENT, id=f"{tag}-{i}", ts=now, data={"due_ms": now})
            sender.send_sync(ev)
            return run_id_for(f"{APP_ID}-{NAP_FN}", ev.id or "", now)

        warm = warm_up(send_warm, lambda k: k in done.seen, s.check_alive, "stepstream")
        engine_pid = s.engine.proc.pid
        before = {**proc_memory(engine_pid), "state": dir_size(s.state_dir)}

        tag = f"{variant}-" + uuid.uuid4().hex[:6]
        t0 = now_ms()
        if variant == "sleep":
            fn, events = NAP_FN, [sdk.Event(name=NAP_EVENT, id=f"{tag}-{i:07d}", ts=t0,
                                            data={"due_ms": t0 + DAY_MS}) for i in range(n)]
        else:
            fn, events = WAIT_FN, [sdk.Event(name=WAIT_EVENT, id=f"{tag}-{i:07d}", ts=t0,
                                             data={"key": f"{tag}-k{i}"}) for i in range(n)]
        run_ids = [run_id_for(f"{APP_ID}-{fn}", e.id or "", t0) for e in events]
        sampler = MemorySampler(engine_pid)
        meter = CpuMeter(bench_pids(s.children))
        meter.start()
        try:
            send_s = send_chunked(sender, events)
            timeout = 120 + n / 100
            deadline = time.monotonic() + timeout
            while parked.count() < n and time.monotonic() < deadline:
                s.check_alive()
                time.sleep(0.5)
            cpu = meter.stop()
            with parked.lock:
                at = [parked.seen[r] for r in run_ids if r in parked.seen]
            applied = _check_parked(s, run_ids, variant, api_sample)
            settled = settle(engine_pid)
        finally:
            sampler.close()
        after = proc_memory(engine_pid)
        out: dict[str, Any] = {
            "variant": variant, "runs": n, "parked": len(at), "send_s": round(send_s, 2),
            "park_s": round(max(at) - t0 / 1000, 2) if at else None,
            "park_rate": len(at) / (max(at) - t0 / 1000) if at else None,
            "warm_up_s": round(warm, 2), "api_check": applied,
            "settle_s": round(settled, 1),
            "engine": {**after, "before": before},
            "state": dir_size(s.state_dir),
            "worker": proc_memory(s.children[1].proc.pid),
            "broker": proc_memory(meter.pids.get("broker")),
            "rss_series": [(round(t, 1), round(m)) for t, m in sampler.samples[::10]],
            "cpu": cpu, "prefix": s.settings.prefix,
            "engine_memtable_mb": memtable_mb, "engine_block_cache_mb": block_cache_mb,
        }
        if variant == "wait":
            out["resume_check"] = _resume_some(s, done, events, run_ids)
        # Last: it changes the engine (flushes memtables, empties caches).
        out["diagnosis"] = request_diagnosis(s.work)
        if len(at) < n:
            out["error"] = f"only {len(at)} of {n} runs parked within {timeout:g}s"
        return out
    finally:
        s.close()


def _resume_some(s: Stepstream, done: Observer, events: list[sdk.Event], run_ids: list[str],
                 k: int = 100, timeout: float = 60.0) -> dict[str, Any]:
    """Send the awaited event for ``k`` of the waiting runs (matched on their key) and
    see those runs complete: the waits are live, not just stored."""
    assert s.sender is not None
    picks = random.Random(5).sample(range(len(events)), min(k, len(events)))
    t0 = time.time()
    s.sender.send_sync([sdk.Event(name=RESUME_EVENT, data={"key": events[i].data["key"]})
                   for i in picks])
    want = [run_ids[i] for i in picks]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with done.lock:
            got = [done.seen[r] for r in want if r in done.seen]
        if len(got) == len(want):
            break
        time.sleep(0.2)
    lat = sorted((at - t0) * 1000 for at in got)
    return {"sent": len(want), "completed": len(got),
            "p50_ms": lat[len(lat) // 2] if lat else None, "max_ms": lat[-1] if lat else None}


def _check_parked(s: Stepstream, run_ids: list[str], variant: str, sample: int
                  ) -> dict[str, Any]:
    """Ask the engine about a sample of runs until each shows its step parked (the
    report is folded), for up to 60 s."""
    ids = random.Random(11).sample(run_ids, min(sample, len(run_ids)))
    want = "sleeping" if variant == "sleep" else "waiting"
    pending = set(ids)
    deadline = time.monotonic() + 60
    last: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for run_id in list(pending):
            try:
                run = s.api_get(f"/v1/runs/{run_id}")["data"]
            except Exception as exc:
                last[run_id] = type(exc).__name__
                continue
            steps = run.get("steps") or []
            status = steps[0].get("status") if steps else None
            last[run_id] = f"{run.get('status')}/{status}"
            if run.get("status") == "Running" and status == want:
                pending.discard(run_id)
        if pending:
            time.sleep(1)
    out: dict[str, Any] = {"sampled": len(ids), "parked": len(ids) - len(pending)}
    if pending:
        out["not_parked"] = {r: last.get(r) for r in list(pending)[:5]}
    return out


# --- the peer -----------------------------------------------------------------------------


def run_peer(broker: str, *, n: int, partitions: int, work: Path) -> dict[str, Any]:
    peer = start_faust_peer(broker, partitions, work)
    try:
        assert peer.observer is not None
        done = peer.observer
        tag = "warm-" + uuid.uuid4().hex[:6]

        def send_warm(i: int) -> str:
            now = now_ms()
            ev = sdk.Event(name=NAP_EVENT, id=f"{tag}-{i}", ts=now, data={"due_ms": now})
            peer.sender.send_sync(ev)
            return ev.id or ""

        warm = warm_up(send_warm, lambda k: k in done.seen, peer.check_alive, "faust")
        pid = peer.child.proc.pid
        before = {**proc_memory(pid), "state": dir_size(peer.datadir)}
        tag = "sleep-" + uuid.uuid4().hex[:6]
        t0 = now_ms()
        events = [sdk.Event(name=NAP_EVENT, id=f"{tag}-{i:07d}", ts=t0,
                            data={"due_ms": t0 + DAY_MS}) for i in range(n)]
        meter = CpuMeter(bench_pids([peer.child]))
        meter.start()
        send_s = send_chunked(peer.sender, events)
        timeout = 120 + n / 100
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = peer.stats()
            if st.get("parked_by_tag", {}).get(tag, 0) >= n:
                break
            peer.check_alive()
            time.sleep(0.5)
        cpu = meter.stop()
        settled = settle(pid)
        parked = st.get("parked_by_tag", {}).get(tag, 0)
        last = st.get("last_park")
        out: dict[str, Any] = {
            "runs": n, "parked": parked, "send_s": round(send_s, 2),
            "park_s": round(last - t0 / 1000, 2) if last else None,
            "park_rate": parked / (last - t0 / 1000) if last else None,
            "warm_up_s": round(warm, 2), "settle_s": round(settled, 1),
            "engine": {**proc_memory(pid), "before": before},
            "state": dir_size(peer.datadir), "store": st.get("store"),
            "broker": proc_memory(meter.pids.get("broker")),
            "cpu": cpu, "prefix": peer.settings.prefix,
        }
        if parked < n:
            out["error"] = f"only {parked} of {n} entries stored within {timeout:g}s"
        return out
    finally:
        peer.close()


def bench_holding(broker: str, *, n: int = 100_000, variant: str = "sleep",
                  partitions: int = 8, peer: bool = True, concurrency: int = 100,
                  memtable_mb: int | None = None, block_cache_mb: int | None = None
                  ) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "variant": variant}
    with tempfile.TemporaryDirectory(prefix="stepstream-bench-holding-") as tmp:
        work = Path(tmp)
        try:
            out["ours"] = run_ours(broker, n=n, variant=variant, partitions=partitions,
                                   concurrency=concurrency, work=work / "ours",
                                   memtable_mb=memtable_mb, block_cache_mb=block_cache_mb)
        except Exception as exc:
            logging.exception("stepstream holding failed")
            out["ours"] = {"error": f"{type(exc).__name__}: {exc}"}
        if peer and variant == "sleep":
            try:
                out["peer"] = run_peer(broker, n=n, partitions=partitions, work=work / "peer")
            except Exception as exc:
                logging.exception("faust holding failed")
                out["peer"] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    return out


def print_holding(r: dict[str, Any]) -> None:
    for name, res in (("stepstream engine", r.get("ours")),
                      ("faust rocksdb table", r.get("peer"))):
        if res is None:
            continue
        if "unavailable" in res:
            print(f"  peer unavailable: {res['unavailable']}")
            continue
        if "engine" not in res:
            print(f"  {name}: ERROR {res.get('error')}")
            continue
        mem, state = res["engine"], res["state"]
        changes = [f"state {k} {res[f'engine_{k}']}".replace("_", " ")
                   for k in ("memtable_mb", "block_cache_mb")
                   if res.get(f"engine_{k}") is not None]
        label = f"{name} (settings: {', '.join(changes)})" if changes else name
        print(f"  {label}: {res['parked']}/{res['runs']} parked in "
              f"{fmt(res.get('park_s'), ' s')} ({fmt(res.get('park_rate'))} runs/s); "
              f"RSS {fmt(mem.get('rss_mb'), ' MB')} (peak {fmt(mem.get('hwm_mb'), ' MB')}, "
              f"{fmt(mem['before'].get('rss_mb'), ' MB')} before); on disk "
              f"{fmt(state['mb'], ' MB')} ({state['files']} files)")
        if "api_check" in res:
            api = res["api_check"]
            print(f"    HTTP API: {api['parked']}/{api['sampled']} sampled runs parked"
                  + (f"; not: {api['not_parked']}" if api.get("not_parked") else ""))
        if "resume_check" in res:
            rc = res["resume_check"]
            print(f"    awaited event sent for {rc['sent']} of them: {rc['completed']} "
                  f"completed (p50 {fmt(rc['p50_ms'], ' ms')}, max {fmt(rc['max_ms'], ' ms')})")
        if shares := cpu_shares(res.get("cpu")):
            print(f"    CPU while parking: {shares}; broker RSS "
                  f"{fmt(res.get('broker', {}).get('rss_mb'), ' MB')}")
        diag = res.get("diagnosis")
        if diag and "cache" in diag:
            c, db = diag["cache"], diag["rocksdb"]
            print(f"    where: decoded-state caches {c['runs']} runs x ~{c['bytes_per_state']} B"
                  f" = ~{c['est_mb']} MB (limit {c['limit_per_partition']} per partition); "
                  f"RocksDB memtables {db['cur-size-all-mem-tables'] / 1e6:.1f} MB, block "
                  f"cache {db['block-cache-usage'] / 1e6:.1f} MB, {diag['stores']} databases")
            print(f"    Python objects: {diag.get('python_allocated_blocks')} blocks "
                  f"({diag.get('python_allocated_blocks_after')} without the caches); "
                  f"most tracked: {diag.get('gc_objects')}")
            print(f"    resident by mapping: {diag.get('smaps')}; pymalloc "
                  f"{diag.get('pymalloc')}")
            print(f"    after giving back: {diag.get('smaps_after')}; pymalloc "
                  f"{diag.get('pymalloc_after')}")
            print("    RSS " + ", ".join(f"{fmt(mb, ' MB')} {what}"
                                         for what, mb in diag["steps"]))
        elif diag:
            print(f"    (no memory breakdown: {diag.get('error')})")
        if "error" in res:
            print(f"    ({res['error']})")


def summary_rows(r: dict[str, Any]) -> list[list[str]]:
    ours, peer = r.get("ours") or {}, r.get("peer")
    n, variant = r.get("n"), r.get("variant")
    what = "sleeping" if variant == "sleep" else "waiting"

    def cell(res: dict[str, Any] | None, value: Any) -> str:
        if res is None:
            return "-"
        if "unavailable" in res:
            return "unavailable"
        if "engine" not in res:
            return "error"
        return fmt(value(res))

    rss = (ours.get("engine") or {}).get("rss_mb")
    met = "-" if rss is None else ("ok" if rss < TARGET_RSS_MB else "FAIL")
    if ours.get("parked") != ours.get("runs"):
        met = "FAIL"
    return [
        [f"{n} {what} runs: RSS MB", cell(ours, lambda x: x["engine"].get("rss_mb")),
         cell(peer, lambda x: x["engine"].get("rss_mb")), f"< {TARGET_RSS_MB:g}", met],
        [f"{n} {what} runs: on disk MB", cell(ours, lambda x: x["state"]["mb"]),
         cell(peer, lambda x: x["state"]["mb"]), "-", ""],
        [f"{n} {what} runs: time to park s", cell(ours, lambda x: x.get("park_s")),
         cell(peer, lambda x: x.get("park_s")), "-", ""],
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.holding", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10,000 runs")
    p.add_argument("-n", "--runs", type=int, help="runs to park (100000; quick 10000)")
    p.add_argument("--variant", choices=("sleep", "wait"), action="append",
                   help="sleep, wait (repeatable; both by default)")
    p.add_argument("--concurrency", type=int, default=100, help="worker concurrency (100)")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--state-memtable-mb", type=int,
                   help="the engine's STEPSTREAM_STATE_MEMTABLE_MB (its default: 64)")
    p.add_argument("--state-block-cache-mb", type=int,
                   help="the engine's STEPSTREAM_STATE_BLOCK_CACHE_MB (its default: 16)")
    p.add_argument("--no-peer", action="store_true", help="skip the Faust peer")
    p.add_argument("--broker", help="use this broker instead of a fresh dev broker")
    args = p.parse_args(argv)
    args.runs = args.runs or (10_000 if args.quick else 100_000)
    args.variant = args.variant or ["sleep", "wait"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for variant in args.variant:
        print(f"== holding: {args.runs} runs parked ({variant})", flush=True)
        with section_broker(args.broker) as broker:
            r = bench_holding(broker, n=args.runs, variant=variant,
                              partitions=args.partitions, peer=not args.no_peer,
                              concurrency=args.concurrency,
                              memtable_mb=args.state_memtable_mb,
                              block_cache_mb=args.state_block_cache_mb)
        print_holding(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
