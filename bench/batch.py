"""Benchmark 7: batching (issue 11). N events (100,000) sent as fast as the sender can,
in lists, to a function with ``batch_events=Batch(max_size=100, timeout="1s")``, and
the same events to the same function without batching (:mod:`bench.batch_app`), one
after the other in the same invocation, each on a fresh dev broker with its own engine
and worker (:func:`bench.runs.start_ours`).

An event is *absorbed* once it is in a run that started: the run's first task
(``seq`` 1) is on ``tasks``, and a batch run's task carries its events. An observer
reads ``tasks`` while the events are sent and takes each first task's CreateTime as
its run's start. Figures, from the first send:

- events/s absorbed: events acknowledged / time until the last of them was in a
  started run (the floor: 20,000 on the dev broker);
- runs/s: runs started over the same time;
- acceptance -> run start: from the event's ``ts`` (stamped as its list is sent) to
  the start of the run that holds it, p50/p99/max.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack

from bench import batch_app
from bench.common import Observer, fmt, now_ms, percentile
from bench.launch import section_broker
from bench.runs import System, measure_system, start_ours
from topics.catalog import Catalog

FLOOR_ABSORBED = 20_000  # events/s absorbed into batch runs, on the dev broker
CHUNK = 1000  # events per send
IN_FLIGHT = 8  # sends awaiting their acknowledgement at once
LABELS = {"batched": f"Batch(max_size={batch_app.MAX_SIZE}, timeout=\"{batch_app.TIMEOUT}\")",
          "plain": "no batching"}


class Starts:
    """Which run each event started in: fed every ``tasks`` record by an
    :class:`~bench.common.Observer`, which keeps each run's first-task CreateTime."""

    def __init__(self) -> None:
        self.run_of: dict[str, str] = {}  # event id -> run id
        self.ts: dict[str, int] = {}  # event id -> its ts (acceptance)

    def extract(self, value: bytes) -> str | None:
        """The run id of a run's first task (recording its events), else None."""
        try:
            body = msgpack.unpackb(value, raw=False)
        except Exception:
            return None
        if not isinstance(body, dict) or body.get("k") != "task" or body.get("seq") != 1:
            return None
        run_id = str(body.get("run_id"))
        for ev in body.get("events") or [body.get("event")]:
            if isinstance(ev, dict) and isinstance(ev.get("id"), str):
                self.run_of.setdefault(ev["id"], run_id)
                self.ts.setdefault(ev["id"], int(ev.get("ts") or 0))
        return run_id


def absorption(sent: dict[str, int], starts: Starts, seen: dict[str, float], t0: float
               ) -> dict[str, Any]:
    """Figures of the events ``sent`` (event id -> ts in ms, the acknowledged ones) from
    where they started (``starts``; ``seen``: run id -> its start in s), ``t0`` the
    first send (s): events absorbed, runs, their rates, acceptance -> run start."""
    waits: list[float] = []
    runs: set[str] = set()
    last = t0
    for event_id, ts in sent.items():
        run_id = starts.run_of.get(event_id)
        started = seen.get(run_id) if run_id is not None else None
        if started is None:
            continue
        runs.add(run_id)  # type: ignore[arg-type]
        last = max(last, started)
        waits.append(started * 1000 - ts)
    elapsed = last - t0
    out: dict[str, Any] = {"events": len(sent), "absorbed": len(waits), "runs": len(runs),
                           "elapsed_s": round(elapsed, 3)}
    if waits and elapsed > 0:
        out["events_per_s"] = len(waits) / elapsed
        out["runs_per_s"] = len(runs) / elapsed
        out["events_per_run"] = len(waits) / len(runs)
        out["accepted_to_start_ms"] = {"p50": percentile(waits, 50),
                                       "p99": percentile(waits, 99), "max": max(waits)}
    return out


async def send_all(system: System, variant: str, n: int) -> dict[str, int]:
    """Send ``n`` events of ``variant`` in lists of CHUNK, IN_FLIGHT lists at a time,
    each stamped as it is sent; the acknowledged ones, event id -> ts."""
    assert system.sender is not None
    make, tag = batch_app.event_maker(variant), "b-" + uuid.uuid4().hex[:6]
    sent: dict[str, int] = {}
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(start: int) -> None:
        assert system.sender is not None
        try:
            ts = now_ms()
            chunk = [make(tag, i, ts) for i in range(start, min(n, start + CHUNK))]
            await system.sender.send(chunk)
            sent.update((e.id or "", ts) for e in chunk)
        finally:
            gate.release()

    tasks = []
    for start in range(0, n, CHUNK):
        await gate.acquire()
        tasks.append(asyncio.ensure_future(one(start)))
    await asyncio.gather(*tasks, return_exceptions=True)
    return sent


def measure(system: System, *, variant: str, n: int, timeout: float, starts: Starts
            ) -> dict[str, Any]:
    t0 = time.time()
    sent = asyncio.run(send_all(system, variant, n))
    send_s = time.time() - t0
    deadline = time.monotonic() + timeout
    while (sum(1 for e in sent if e in starts.run_of) < len(sent)
           and time.monotonic() < deadline and system.alive()):
        time.sleep(0.2)
    with system.observer.lock:
        seen = dict(system.observer.seen)
    out = absorption(sent, starts, seen, t0)
    out.update(variant=variant, sent=n, send_s=round(send_s, 3),
               sends_not_acknowledged=n - len(sent))
    if out["absorbed"] < len(sent):
        out["error"] = (f"only {out['absorbed']} of {len(sent)} events in a started run "
                        f"within {timeout:g}s")
    return out


def start_system(broker: str, partitions: int, work: Path, concurrency: int, starts: Starts
                 ) -> System:
    """The engine and a worker of :mod:`bench.batch_app`, warmed up on ``plain`` (a
    batch's run id is its first event's, unknown to the sender), observed on ``tasks``."""
    system = start_ours(broker, partitions, work, concurrency, app="bench.batch_app:client",
                        key_for=batch_app.plain_run_id,
                        event=batch_app.event_maker("plain"), what="batch")
    system.observer.close()
    system.observer = Observer(system.settings, Catalog(system.settings).tasks,
                               starts.extract)
    return system


def bench_batch(broker: str | None, *, n: int, partitions: int, concurrency: int,
                timeout: float = 300.0) -> dict[str, Any]:
    """Both variants on ``n`` events each (``broker``: None for a fresh dev broker per
    variant); prints each as it comes."""
    out: dict[str, Any] = {"events": n, "max_size": batch_app.MAX_SIZE,
                           "timeout": batch_app.TIMEOUT, "concurrency": concurrency,
                           "variants": {}}
    for variant in batch_app.VARIANTS:
        print(f"  {variant}: {n} events, {LABELS[variant]} ...", flush=True)
        starts = Starts()
        try:
            with section_broker(broker) as b, \
                    tempfile.TemporaryDirectory(prefix="stepstream-bench-batch-") as tmp:
                out["variants"][variant] = measure_system(
                    functools.partial(start_system, b, partitions, Path(tmp), concurrency,
                                      starts),
                    functools.partial(measure, variant=variant, n=n, timeout=timeout,
                                      starts=starts))
        except Exception as exc:
            out["variants"][variant] = {"error": f"{type(exc).__name__}: {exc}"}
        print_variant(variant, out["variants"][variant])
    return out


def passed(r: dict[str, Any]) -> bool:
    """Every acknowledged event absorbed, at FLOOR_ABSORBED events/s or more."""
    return bool(r.get("absorbed") and r["absorbed"] == r["events"]
                and (r.get("events_per_s") or 0) >= FLOOR_ABSORBED)


def print_variant(variant: str, r: dict[str, Any]) -> None:
    if "events_per_s" not in r:
        print(f"    {LABELS[variant]}: ERROR {r.get('error')}")
        return
    wait = r["accepted_to_start_ms"]
    cpu = r.get("cpu") or {}
    print(f"    {LABELS[variant]}: {fmt(r['events_per_s'])} events/s absorbed, "
          f"{fmt(r['runs_per_s'])} runs/s ({r['absorbed']}/{r['events']} events in "
          f"{r['runs']} runs in {fmt(r['elapsed_s'])} s; sent in {fmt(r['send_s'])} s); "
          f"acceptance -> run start p50 {fmt(wait['p50'], ' ms')}, p99 "
          f"{fmt(wait['p99'], ' ms')}, max {fmt(wait['max'], ' ms')}; CPU "
          + ", ".join(f"{k} {fmt(cpu.get(f'{k}_cpu_pct'), '%')}"
                      for k in ("engine", "worker", "broker")))
    if r.get("error"):
        print(f"      ({r['error']})")
    if variant == "batched":
        print(f"      floor {FLOOR_ABSORBED:,} events/s absorbed: "
              f"{'PASS' if passed(r) else 'FAIL'}")


def summary_rows(r: dict[str, Any]) -> list[list[str]]:
    """Rows for bench.all's summary table: benchmark, batched, peer (the same events
    without batching), floor, met."""
    ours, base = r["variants"].get("batched") or {}, r["variants"].get("plain") or {}
    what = f"batch {r['events']:,} events, max_size {r['max_size']} (peer: no batching)"

    def cell(res: dict[str, Any], field: str, sub: str | None = None) -> str:
        value = res.get(field)
        if sub is not None:
            value = (value or {}).get(sub)
        return fmt(value) if value is not None else "error"

    met = "ok" if passed(ours) else "FAIL"
    return [[f"{what}: events/s absorbed", cell(ours, "events_per_s"),
             cell(base, "events_per_s"), f">= {FLOOR_ABSORBED:,}", met],
            [f"{what}: runs/s", cell(ours, "runs_per_s"), cell(base, "runs_per_s"), "-", ""],
            [f"{what}: p99 ms acceptance -> run start",
             cell(ours, "accepted_to_start_ms", "p99"),
             cell(base, "accepted_to_start_ms", "p99"), "-", ""]]
