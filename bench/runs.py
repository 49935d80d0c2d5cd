"""Benchmarks 2 and 3: 3-step runs as a burst (runs/s) and at fixed offered rates
(end-to-end latency), for stepstream and for a Faust pipeline of the same hops.

Processes: the engine (``python -m engine engine``) and one worker (``python -m engine
worker bench.pipeline_app:client``) run as children, so each has a core of its own on
a 2-core machine; this process only sends events and observes completions. The peer
is one Faust worker process (:mod:`bench.faust_pipeline`).

A run is complete when its completion record is produced: for stepstream the
``outcomes.reported`` record carrying ``function.completed`` on ``runs`` (its
CreateTime is within a millisecond of the run state's ``ended_at``), for Faust the
record on ``done``. An observer thread reads that topic (no consumer group) and takes
each completion's time from the record's CreateTime, so both sides are measured the
same way and the observer can fetch lazily instead of adding load to the broker.
Latency = completion time - the event's scheduled send time (open loop: events are
sent on schedule whatever the completions, so a slow system is charged for its
queueing). All processes share this machine's clock.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import tempfile
import time
import urllib.error
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sdk
from bench import pipeline_app
from bench import work as bench_work
from bench.common import CpuMeter, Observer, completed_run_id, done_id, percentile
from bench.hops import hop_breakdown
from bench.launch import (
    Child,
    api_get,
    bench_pids,
    bench_settings,
    create_topics,
    dbos_missing,
    faust_env,
    faust_missing,
    new_prefix,
    settings_env,
    start_stepstream,
)
from engine.cli.provision import ensure_topics
from topics.catalog import Catalog
from topics.settings import Settings

NOT_FOUND = "not found (404)"


def probe_run(port: int, run_id: str, timeout: float = 5.0) -> str:
    """A run's status on the engine at ``port``: ``"<status> (last: <timeline type>)"``,
    ``NOT_FOUND`` (a 404: the engine holds no such run), or ``error (...)`` for any other
    failure (a timeout, a 5xx, no connection), which says nothing of the run."""
    try:
        run = api_get(port, f"/v1/runs/{run_id}", timeout)["data"]
        last = run["timeline"][-1] if run["timeline"] else {}
        return f"{run['status']} (last: {last.get('type')})"
    except urllib.error.HTTPError as exc:
        return NOT_FOUND if exc.code == 404 else f"error (HTTP {exc.code})"
    except (OSError, ValueError, LookupError, TypeError, AttributeError) as exc:
        # URLError, timeouts, refused connections, or an answer not shaped like a run.
        return f"error ({type(exc).__name__}: {exc})"


def pipeline_event(tag: str, i: int, ts_ms: int) -> sdk.Event:
    """The ``i``-th event of :mod:`bench.pipeline_app` sent under ``tag``."""
    return sdk.Event(name=pipeline_app.EVENT, id=f"{tag}-{i:07d}", ts=ts_ms,
                     data={"order_id": f"ord-{i:07d}", "total": 1999, "currency": "EUR"})


# (tag, i, scheduled send time in ms) -> the event to send
MakeEvent = Callable[[str, int, int], sdk.Event]


@dataclass
class System:
    """A running system under test: how to send to it and how completions are keyed."""

    name: str
    settings: Settings
    observer: Observer
    # The observer's key for an event (run id for stepstream, event id for Faust).
    key_for: Callable[[str, int], str]
    children: list[Child] = field(default_factory=list)
    sender: sdk.Client | None = None
    api_port: int | None = None  # the engine's HTTP API, to ask about unseen runs
    # Called once its processes have stopped (their exit logs are complete).
    after_close: list[Callable[[], None]] = field(default_factory=list)
    event: MakeEvent = pipeline_event  # the events it is sent

    def run_status(self, run_id: str) -> str:
        """What the engine says of a run the observer has not seen complete
        (:func:`probe_run`)."""
        return "unknown" if self.api_port is None else probe_run(self.api_port, run_id)

    def engine_lag(self) -> int | None:
        """The engine's total consumer lag (``GET /health``), None if unknown."""
        if self.api_port is None:
            return None
        try:
            lag = api_get(self.api_port, "/health", 5).get("consumer_lag") or {}
        except (OSError, ValueError):
            return None
        total = lag.get("total")
        return total if isinstance(total, int) else None

    def alive(self) -> bool:
        return all(c.alive for c in self.children)

    def check_alive(self) -> None:
        for c in self.children:
            if not c.alive:
                raise RuntimeError(f"{self.name}: a child process exited "
                                   f"({c.proc.returncode}); log tail:\n{c.tail()}")

    def close(self) -> None:
        for c in reversed(self.children):
            c.stop()
        self.observer.close()
        if self.sender is not None:
            self.sender.close(10)
        for then in self.after_close:
            then()


def start_ours(broker: str, partitions: int, work: Path, concurrency: int, *,
               app: str = "bench.pipeline_app:client",
               key_for: Callable[[str, int], str] = pipeline_app.run_id,
               event: MakeEvent = pipeline_event, what: str = "runs",
               engine_env: dict[str, str] | None = None) -> System:
    """The engine and a worker of ``app`` (:mod:`bench.pipeline_app` by default;
    :func:`start_stepstream`); ``key_for`` and ``event`` as in :class:`System`."""
    s = start_stepstream(broker, partitions, work, app, concurrency, what,
                         producer_stats_ms=bench_work.STATS_MS, engine_env=engine_env)
    try:
        observer = Observer(s.settings, Catalog(s.settings).runs, completed_run_id)
    except BaseException:
        s.close()
        raise
    return System("stepstream", s.settings, observer, key_for, s.children, s.sender,
                  s.api_port, event=event)


def start_faust(broker: str, partitions: int, work: Path) -> System:
    missing = faust_missing()
    if missing:
        raise RuntimeError(missing)
    settings = bench_settings(broker, new_prefix("faust"), partitions)
    ensure_topics(settings)
    p = settings.prefix
    create_topics(broker, [p + "s1", p + "s2", p + "done"], partitions)
    env = faust_env(settings, work)
    observer = Observer(settings, p + "done", done_id)
    system = System("faust", settings, observer, lambda event_id, ts: event_id)
    try:
        system.children.append(Child("faust", "bench.faust_pipeline", [], env,
                                     work / "faust-pipeline.log"))
        system.sender = sdk.Client("bench-sender", settings=settings)
    except BaseException:
        system.close()
        raise
    return system


def start_dbos(broker: str, partitions: int, work: Path) -> System:
    """The DBOS peer (:mod:`bench.dbos_peer`) on a prefix of its own."""
    missing = dbos_missing()
    if missing:
        raise RuntimeError(missing)
    settings = bench_settings(broker, new_prefix("dbos"), partitions)
    ensure_topics(settings)
    create_topics(broker, [settings.prefix + "done"], partitions)
    env = {**settings_env(settings), "BENCH_DBOS_BROKER": settings.brokers or "",
           "BENCH_DBOS_PREFIX": settings.prefix, "BENCH_DBOS_PARTITIONS": str(partitions),
           "BENCH_DBOS_DATADIR": str(work / "dbos-data"),
           "BENCH_DBOS_FETCH_WAIT_MS": str(settings.fetch_wait_max_ms),
           "BENCH_DBOS_CONCURRENCY": str(DBOS_CONCURRENCY)}
    observer = Observer(settings, settings.prefix + "done", done_id)
    system = System("dbos", settings, observer, lambda event_id, ts: event_id)
    try:
        system.children.append(Child("dbos", "bench.dbos_peer", [], env, work / "dbos.log"))
        system.sender = sdk.Client("bench-sender", settings=settings)
    except BaseException:
        system.close()
        raise
    return system


def warm_up(system: System, timeout: float = 90.0, n: int = 50) -> float:
    """Send events until one completes (the worker has registered its function and
    every consumer has joined its group), then a small batch; returns seconds taken."""
    assert system.sender is not None
    t0 = time.monotonic()
    tag = "warm-" + uuid.uuid4().hex[:6]
    i = 0
    first_done = False
    while not first_done:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{system.name}: no warm-up run completed in {timeout:g}s")
        system.check_alive()
        ts = int(time.time() * 1000)
        ev = system.event(tag, i, ts)
        assert ev.id is not None
        key = system.key_for(ev.id, ts)
        system.sender.send_sync(ev)
        i += 1
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            if key in system.observer.seen:
                first_done = True
                break
            time.sleep(0.02)
    ts = int(time.time() * 1000)
    batch = [system.event(tag + "b", j, ts) for j in range(n)]
    system.sender.send_sync(batch)
    keys = [system.key_for(e.id or "", ts) for e in batch]
    deadline = time.monotonic() + timeout
    while not all(k in system.observer.seen for k in keys):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{system.name}: warm-up batch did not complete")
        system.check_alive()
        time.sleep(0.05)
    return time.monotonic() - t0


def burst(system: System, n: int, timeout: float) -> dict[str, Any]:
    """Send ``n`` events at once; runs/s from the first send to the last completion.
    For stepstream, also the records and produce requests per run (:mod:`bench.work`)."""
    assert system.sender is not None
    mark = bench_work.before(system) if system.name == "stepstream" else None
    t0 = time.time()
    ts = int(t0 * 1000)
    events = [system.event("burst-" + uuid.uuid4().hex[:6], i, ts) for i in range(n)]
    keys = {system.key_for(e.id or "", ts) for e in events}
    system.sender.send_sync(events)
    t_acked = time.time()
    deadline = time.monotonic() + timeout
    seen = system.observer.seen
    while True:
        with system.observer.lock:
            done = [seen[k] for k in keys if k in seen]
        if len(done) == n or time.monotonic() > deadline or not system.alive():
            break
        time.sleep(0.05)
    out: dict[str, Any] = {"runs": n, "completed": len(done),
                           "send_s": round(t_acked - t0, 3)}
    if done:
        last = max(done)
        out["elapsed_s"] = round(last - t0, 3)
        out["rate"] = len(done) / (last - t0)
        lat = [(d - t0) * 1000 for d in done]
        out["time_to_complete_ms"] = {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                                      "max": max(lat)}
    if len(done) < n:
        out["error"] = f"only {len(done)} of {n} runs completed within {timeout:g}s"
        system.check_alive()
    elif mark is not None:
        out["work"] = bench_work.records_after(system, mark, n)
        # Produce requests are logged when the processes stop (measure_system stops them).
        system.after_close.append(lambda: out["work"].update(bench_work.produce_requests(
            {c.name: c.log for c in system.children}, mark, n)))
    return out


async def offer(client: sdk.Client, rate: float, n: int, tag: str,
                event: MakeEvent = pipeline_event
                ) -> tuple[dict[str, float], float, int, int]:
    """Send ``n`` events (made by ``event``) at ``rate``/s on schedule; return the
    scheduled send times of the acknowledged ones (by (id, ts)), the wall time the
    schedule started, the worst lag of the sender behind the schedule (ms), and how many
    sends were not acknowledged."""
    start = time.time() + 0.05
    scheduled: dict[str, float] = {}
    # Every send is kept and awaited to its end: a send that failed (its events were not
    # acknowledged) must come out of the expected runs, not count as a lost run.
    sends: list[tuple[asyncio.Future[Any], list[str]]] = []
    sent = 0
    worst_lag = 0.0
    while sent < n:
        now = time.time()
        due = min(n, max(0, math.floor((now - start) * rate) + 1))
        if due > sent:
            batch = []
            for i in range(sent, due):
                at = start + i / rate
                ev = event(tag, i, int(at * 1000))
                scheduled[f"{ev.id}\x1f{ev.ts}"] = at
                batch.append(ev)
            worst_lag = max(worst_lag, now - (start + sent / rate))
            fut = asyncio.ensure_future(client.send(batch))
            sends.append((fut, [f"{ev.id}\x1f{ev.ts}" for ev in batch]))
            sent = due
        await asyncio.sleep(max(0.0, start + sent / rate - time.time()))
    results = await asyncio.gather(*(f for f, _ in sends), return_exceptions=True)
    failed = 0
    for (_, ids), result in zip(sends, results, strict=True):
        if isinstance(result, BaseException):
            failed += len(ids)
            for id_ts in ids:
                scheduled.pop(id_ts, None)
    return scheduled, start, int(worst_lag * 1000), failed


def offered_load(system: System, rate: float, duration: float, drain: float
                 ) -> dict[str, Any]:
    """Open loop: ``rate`` events/s for ``duration`` s; latency per run."""
    assert system.sender is not None
    n = max(1, int(rate * duration))
    tag = f"r{int(rate)}-" + uuid.uuid4().hex[:6]
    scheduled, start, lag_ms, failed = asyncio.run(offer(system.sender, rate, n, tag,
                                                            system.event))
    keys: dict[str, float] = {}
    for id_ts, at in scheduled.items():
        event_id, _, ts = id_ts.partition("\x1f")
        keys[system.key_for(event_id, int(ts))] = at
    deadline = time.monotonic() + drain
    seen = system.observer.seen
    while True:
        with system.observer.lock:
            missing = sum(1 for k in keys if k not in seen)
        if not missing or time.monotonic() > deadline or not system.alive():
            break
        time.sleep(0.1)
    with system.observer.lock:
        done = {k: seen[k] for k in keys if k in seen}
    lat = [(done[k] - at) * 1000 if k in done else math.inf for k, at in keys.items()]
    out: dict[str, Any] = {
        "offered_rate": rate, "duration_s": duration, "runs": len(keys), "completed": len(done),
        "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99), "max_ms": max(lat) if lat else math.nan,
        "sender_worst_lag_ms": lag_ms, "sends_not_acknowledged": failed,
    }
    if done:
        # Sustained rate: completions per second in the steady part of the sending
        # window (its first fifth, at most 5 s, is left out as ramp-up). It equals the
        # offered rate when the system keeps up, and falls below it when a backlog grows.
        skip = min(5.0, duration * 0.2)
        steady = sum(1 for t in done.values() if start + skip <= t <= start + duration)
        out["sustained_rate"] = steady / (duration - skip)
        # Every completed run over the time from the first send to the last completion.
        out["overall_rate"] = len(done) / (max(done.values()) - start)
    if len(done) < len(keys):
        out["error"] = (f"{len(keys) - len(done)} of {len(keys)} runs not completed within "
                        f"{drain:g}s of the end")
        system.check_alive()
        if system.api_port is not None:  # only stepstream can be asked about a run
            found = account_for_unseen(system, [k for k in keys if k not in done])
            out.update({k: v for k, v in found.items() if k != "statuses"})
    if system.name == "stepstream":
        # Read back after the measurement, so it does not disturb it.
        out["hops"] = hop_breakdown(system.settings,
                                    {k: int(at * 1000) for k, at in keys.items()})
    return out


DBOS_BURST_S = 120.0
# Workflows the DBOS peer runs at once. Its SQLite default serialises writers (IMMEDIATE
# transactions, a busy timeout that sleeps), so fewer is faster here: a 300-run burst
# completed at 33 runs/s with 1, 25 with 10, 21 with 100 (the SDK's default).
DBOS_CONCURRENCY = 1
# How long to wait, after the drain, for the engine to catch up before asking about
# unseen runs again (an engine far behind took minutes in issue 2's outside campaign).
CATCH_UP_S = 300.0
NOT_FOUND_GRACE_S = 60.0
MAX_PROBES = 2000


def account_for_unseen(system: System, unseen: list[str], catch_up_s: float = CATCH_UP_S
                       ) -> dict[str, Any]:
    """Where the runs the observer has not seen complete are, asked only once the
    engine's consumer lag is zero (before that, "not found" may only mean "not folded
    yet"): ``unseen_runs`` (a sample: run -> status), ``late`` (counts by status).
    A run still ``not found (404)`` with zero lag is missing; an ``error`` says nothing."""
    out: dict[str, Any] = {}
    if system.api_port is not None:
        t0 = time.monotonic()
        lag = system.engine_lag()
        while lag != 0 and time.monotonic() - t0 < catch_up_s and system.alive():
            time.sleep(0.5)
            lag = system.engine_lag()
        out["catch_up"] = {"waited_s": round(time.monotonic() - t0, 1), "engine_lag": lag}
    with system.observer.lock:
        unseen = [k for k in unseen if k not in system.observer.seen]
    statuses = {k: system.run_status(k) for k in unseen[:MAX_PROBES]}
    # Zero lag is read from the watermarks the last fetches carried; a run requested in
    # the engine's last rounds may still be on its way from ``events`` to ``runs``. A
    # 404 is asked again for NOT_FOUND_GRACE_S before it counts as missing.
    t0 = time.monotonic()
    while (any(v.startswith(NOT_FOUND) for v in statuses.values())
           and time.monotonic() - t0 < NOT_FOUND_GRACE_S and system.alive()):
        time.sleep(1.0)
        for k, v in statuses.items():
            if v.startswith(NOT_FOUND):
                statuses[k] = system.run_status(k)
    if statuses:
        out["reprobed_s"] = round(time.monotonic() - t0, 1)
    counts: dict[str, int] = {"not probed": len(unseen) - len(statuses)}
    for status in statuses.values():
        kind = status.split(" (")[0]
        counts[kind] = counts.get(kind, 0) + 1
    out["late"] = {"unseen_after_catch_up": len(unseen), "probed": len(statuses),
                   "by_status": {k: v for k, v in counts.items() if v}}
    out["unseen_runs"] = dict(list(statuses.items())[:20])
    out["statuses"] = statuses
    return out


def bench_burst(broker: str, *, n: int, partitions: int, concurrency: int, peer: bool,
                timeout: float) -> dict[str, Any]:
    # DBOS on SQLite completes tens of runs/s here: its burst is cut at DBOS_BURST_S and
    # its rate taken over the runs it completed by then.
    return _on_both(broker, partitions, concurrency, peer, lambda system: burst(
        system, n, min(timeout, DBOS_BURST_S) if system.name == "dbos" else timeout))


def bench_latency(broker: str, *, rate: float, duration: float, partitions: int,
                  concurrency: int, peer: bool, drain: float = 30.0) -> dict[str, Any]:
    return _on_both(broker, partitions, concurrency, peer,
                    lambda system: offered_load(system, rate, duration, drain))


def _on_both(broker: str, partitions: int, concurrency: int, peer: bool,
             measure: Callable[[System], dict[str, Any]]) -> dict[str, Any]:
    """stepstream, then (``peer``) the Faust pipeline as ``peer`` and DBOS as ``dbos``."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stepstream-bench-runs-") as tmp:
        work = Path(tmp)
        (work / "ours").mkdir()
        out["ours"] = measure_system(lambda: start_ours(broker, partitions, work / "ours",
                                                         concurrency), measure)
        if peer:
            for key, start in (("peer", start_faust), ("dbos", start_dbos)):
                (work / key).mkdir()
                try:
                    out[key] = measure_system(functools.partial(start, broker, partitions,
                                                                 work / key), measure)
                except Exception as exc:
                    out[key] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    return out


def measure_system(start: Callable[[], System],
                   measure: Callable[[System], dict[str, Any]]) -> dict[str, Any]:
    """Start a system, warm it up, run ``measure`` on it with its CPU metered, stop it."""
    system = start()
    try:
        warm = warm_up(system)
        meter = CpuMeter(bench_pids(system.children))
        load = os.getloadavg()[0]
        meter.start()
        result = measure(system)
        # CPU used by each process while measuring (the per-hop read-back included):
        # the broker's share shows how close the dev broker is to its limit.
        result["cpu"] = meter.stop()
        result["loadavg_1m_before"] = round(load, 2)
        result["warm_up_s"] = round(warm, 2)
        result["prefix"] = system.settings.prefix
        return result
    finally:
        system.close()
