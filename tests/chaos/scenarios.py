"""The campaign's scenarios. Each starts its own stack on the campaign's broker, holds a
load while it injects its faults for ``seconds``, lets the runs finish, and checks the
invariants from the API, the topics and the app's ledger."""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.stack import ChaosStack, Load
from tests.checkers.health import percentiles, read_samples
from tests.checkers.ledger import (
    TERMINAL,
    each_event_in_one_run,
    exactly_its_runs,
    limit_never_exceeded,
    no_run_stuck,
    one_run_per_tick,
    repeats_after_faults,
    status,
    timers_never_early,
)
from tests.checkers.verdict import Check
from tests.integration.harness import wait_for

FUNCTIONS = ["chaos-three", "chaos-sleeper", "chaos-waiter", "chaos-ticker", "chaos-batched",
             "chaos-debounced", "chaos-limited"]
# A graceful leave hands partitions over at once: a step recorded this shortly before it
# may not have become its run's next task yet (README, Guarantees: the documented window).
REBALANCE_WINDOW_MS = 1000


@dataclass
class Options:
    seconds: float          # fault phase
    rate: float             # load, runs/s
    drain_s: float          # how long runs may take to finish after the faults stop
    rng: random.Random


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    runs: int = 0
    load_seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    bad_inputs: int = 0
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.load_seconds if self.load_seconds else 0.0

    @property
    def violations(self) -> int:
        return sum(c.violations for c in self.checks)


def start(stack: ChaosStack, workers: int = 2) -> None:
    stack.start_engine_proc()
    for _ in range(workers):
        stack.start_worker_proc()
    wait_for(lambda: set(FUNCTIONS) <= _functions(stack), 90, "the app's functions",
             every=0.2)


def _functions(stack: ChaosStack) -> set[str]:
    code, body = stack.call("GET", "/v1/functions")
    return {f["id"] for f in body["data"]} if code == 200 else set()


def _waiting(stack: ChaosStack, event_id: str) -> bool:
    runs = stack.runs_of(event_id) or [{}]
    return (runs[0].get("waiting") or {}).get("kind") == "event"


def functions_kept(stack: ChaosStack, wait_s: float = 60) -> Check:
    """Every function of the app is still registered at the end. A registry that lost
    one would look like lost events (they would start no run), so it is told apart.
    Waited for: an engine just restarted answers once it has read the registry."""
    check = Check("the app's functions stay registered")
    try:
        wait_for(lambda: set(FUNCTIONS) <= _functions(stack), wait_s, "the app's functions",
                 every=0.5)
    except AssertionError:
        pass  # counted below, function by function
    check.checked = len(FUNCTIONS)
    for fn_id in sorted(set(FUNCTIONS) - _functions(stack)):
        check.violation({"function": fn_id, "registered": sorted(_functions(stack))})
    return check


def stop_cron(stack: ChaosStack) -> None:
    """Remove the cron function so the state stops moving (for the replay hash)."""
    stack.call("DELETE", "/v1/functions/chaos-ticker")


def finish(stack: ChaosStack, result: Result, loads: list[Load], opts: Options,
           extra: Callable[[], list[Check]] | None = None) -> Result:
    """Stop the load, let the runs end, check every common invariant."""
    ids: list[str] = []
    for load in loads:
        ids.extend(load.stop())
    if stack.engine_proc is None or stack.engine_proc.poll() is not None:
        stack.start_engine_proc()
    registered = functions_kept(stack)
    stop_cron(stack)
    by_event = stack.settle(ids, opts.drain_s)
    by_event.update({e: [] for e in ids if e not in by_event})
    runs = [r for rs in by_event.values() for r in rs]
    main = loads[0]
    result.runs = sum(1 for r in runs if status(r) == "completed")
    result.load_seconds = main.seconds
    executions = stack.executions()
    faults = stack.fault_ms + [t - REBALANCE_WINDOW_MS for t in stack.rebalance_ms]
    # A scenario whose load never ran checks nothing: that is a failure, not a pass.
    held = Check("load held (events acknowledged, runs completed)")
    held.case(bool(ids) and result.runs > 0, {"events": len(ids), "completed": result.runs})
    exact = exactly_its_runs(by_event)
    result.checks += [held, registered, exact, no_run_stuck(runs),
                      repeats_after_faults(runs, executions, faults)]
    if exact.violations:  # events with no run: was the engine behind, or did it drop them?
        result.notes.append(f"engine /health when runs were missing: "
                            f"{stack.call('GET', '/health')[1]}")
        result.notes.append(f"logs of the scenario (the engine logs a partition or a "
                            f"processor that stands still): {stack.tmp}")
    if extra is not None:
        result.checks += extra()
    stuck = [r for r in runs if status(r) not in TERMINAL]
    for r in stuck[:3]:  # the evidence a stuck run needs, while the stack still runs
        result.notes.append(f"stuck run {r['run_id']}: "
                            f"{stack.call('GET', '/v1/runs/' + str(r['run_id']))[1]}")
    if stuck:
        result.notes.append(f"logs of the stuck scenario: {stack.tmp}")
    result.checks.append(stack.replay_hash())
    health = stack.health_checks()
    latency = percentiles(read_samples(stack.tmp / "health.samples"))
    result.notes.append("/health latency ms: " + ", ".join(
        f"{k} {v:.0f}" for k, v in latency.items()) + "; machine load average (1 min) "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    result.checks += [stack.no_5xx, *health, stack.exits]
    if any(load.send_errors for load in loads):
        result.notes.append(f"sends not acknowledged: {sum(x.send_errors for x in loads)}")
    result.faults = dict(stack.faults)
    return result


def _until(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() < deadline


# --- kill loops -------------------------------------------------------------------------

def under_load(stack: ChaosStack, opts: Options, name: str, every: tuple[float, float],
               inject: Callable[[int], None]) -> Result:
    """Hold the load and call ``inject(k)`` every ``every`` seconds (at random between the
    two) for the fault phase; then finish."""
    result = Result(name)
    start(stack)
    load = Load(stack, "chaos/go", opts.rate)
    going, k = _until(opts.seconds), 0
    while going():
        time.sleep(opts.rng.uniform(*every))
        inject(k)
        k += 1
    return finish(stack, result, [load], opts)


def _bounce_engine(stack: ChaosStack, opts: Options, down_s: tuple[float, float]) -> None:
    stack.kill_engine()
    time.sleep(opts.rng.uniform(*down_s))  # the outage itself
    stack.start_engine_proc()


def engine_kill(stack: ChaosStack, opts: Options) -> Result:
    """kill -9 the engine every few seconds under load; it restarts from its state."""
    return under_load(stack, opts, "engine-kill", (4, 8),
                      lambda k: _bounce_engine(stack, opts, (0.5, 3)))


def worker_kill(stack: ChaosStack, opts: Options) -> Result:
    """kill -9 one of two workers every few seconds under load; a new one replaces it."""
    return under_load(stack, opts, "worker-kill", (5, 9), lambda k: stack.kill_worker(k % 2))


def both_kill(stack: ChaosStack, opts: Options) -> Result:
    """Engine and worker kills interleaved at random under load."""
    def inject(k: int) -> None:
        if opts.rng.random() < 0.5:
            _bounce_engine(stack, opts, (0.5, 2))
        else:
            stack.kill_worker(k % 2)
    return under_load(stack, opts, "engine+worker-kill", (3, 6), inject)


def rebalance_storm(stack: ChaosStack, opts: Options) -> Result:
    """Workers join and leave (SIGTERM) every few seconds, between one and four."""
    def inject(k: int) -> None:
        n = len(stack.workers_procs)
        if n < 4 and (n == 1 or opts.rng.random() < 0.5):
            stack.join_worker()
        else:
            stack.leave_worker()
    return under_load(stack, opts, "rebalance-storm", (2, 4), inject)


# --- an engine down while things come due ------------------------------------------------

def engine_outage(stack: ChaosStack, opts: Options) -> Result:
    """Each cycle: sleeps, waits, an open batch, debounces and a flow-control backlog are
    pending when the engine is killed; while it is down timers come due, waits are
    answered, cron ticks pass and more events arrive; then it restarts."""
    result = Result("engine-outage")
    start(stack)
    load = Load(stack, "chaos/go", opts.rate / 4)
    sent: dict[str, list[str]] = {k: [] for k in ("sleep", "wait", "batch", "limited")}
    debounce_keys: list[str] = []
    going, cycle = _until(opts.seconds), 0
    while going():
        keys = [f"c{cycle}-{i}" for i in range(5)]
        sent["sleep"] += stack.send_many("chaos/sleep", [{}] * 5)
        sent["wait"] += stack.send_many("chaos/wait", [{"key": k} for k in keys])
        sent["batch"] += stack.send_many("chaos/batch", [{"i": i} for i in range(7)])
        sent["limited"] += stack.send_many("chaos/limited", [{"i": i} for i in range(10)])
        dkeys = [f"d{cycle}-{i}" for i in range(3)]
        debounce_keys += dkeys
        stack.send_many("chaos/debounce", [{"k": k, "i": i} for k in dkeys for i in range(3)])
        # The answers below must find their waits registered (an event sent before its
        # wait registered is not for it, as in Inngest).
        waits = sent["wait"][-len(keys):]

        def registered(waits: list[str] = waits) -> bool:
            return all(_waiting(stack, e) for e in waits)
        wait_for(registered, 60, "the waits", every=0.2)
        time.sleep(opts.rng.uniform(0, 1))
        stack.kill_engine()
        stack.send_many("chaos/answer", [{"key": k} for k in keys[:3]])
        sent["sleep"] += stack.send_many("chaos/sleep", [{}] * 2)
        sent["limited"] += stack.send_many("chaos/limited", [{"i": i} for i in range(5)])
        time.sleep(opts.rng.uniform(2.5, 4.5))  # sleeps and debounces come due, ticks pass
        stack.start_engine_proc()
        stack.send_many("chaos/answer", [{"key": k} for k in keys[3:]])
        time.sleep(opts.rng.uniform(1, 3))
        cycle += 1
    result.faults["cycles"] = cycle

    def extra() -> list[Check]:
        by_event = stack.settle([e for k in ("sleep", "wait", "limited") for e in sent[k]],
                                opts.drain_s)
        runs = [r for rs in by_event.values() for r in rs]
        executions = stack.executions()
        batch_runs = stack.runs_of_function("chaos-batched")
        debounced = stack.runs_of_function("chaos-debounced")
        once = exactly_its_runs({e: by_event.get(e, []) for k in ("sleep", "wait", "limited")
                                 for e in sent[k]})
        once.merge(each_event_in_one_run(sent["batch"], batch_runs))
        debounce = Check("one debounced run per key")
        runs_per_key: dict[str, set[str]] = {}
        for e in executions:
            if e.fn == "debounced":
                runs_per_key.setdefault(e.key, set()).add(e.run_id)
        for k in debounce_keys:
            debounce.case(len(runs_per_key.get(k, ())) == 1,
                          {"key": k, "runs": sorted(runs_per_key.get(k, ()))})
        stuck = no_run_stuck(runs + batch_runs + debounced)
        return [once, stuck, debounce, timers_never_early(runs, executions, "nap", "after"),
                limit_never_exceeded(executions, "limited", 2),
                one_run_per_tick(executions, "ticker")]
    return finish(stack, result, [load], opts, extra)


# --- state damage ------------------------------------------------------------------------

def damage(state: Path, rng: random.Random) -> str:
    """Delete one partition's database or corrupt it (a garbage CURRENT, a cut .sst);
    says which."""
    dbs = sorted(p for p in state.iterdir() if p.is_dir() and ".corrupt-" not in p.name)
    db = rng.choice(dbs)
    how = rng.choice(["deleted", "garbage CURRENT", "truncated sst"])
    ssts = sorted(db.glob("*.sst"), key=lambda p: p.stat().st_size)
    if how == "truncated sst" and not ssts:
        how = "garbage CURRENT"
    if how == "deleted":
        shutil.rmtree(db)
    elif how == "garbage CURRENT":
        (db / "CURRENT").write_bytes(b"\x00\xffnot a manifest\n")
    else:
        with ssts[-1].open("r+b") as f:
            f.truncate(ssts[-1].stat().st_size // 2)
    return how


def state_damage(stack: ChaosStack, opts: Options) -> Result:
    """kill -9 the engine, delete or corrupt a partition's state, restart: it rebuilds
    from the topics and goes on."""
    def inject(k: int) -> None:
        stack.kill_engine()
        stack.faults[f"state {damage(stack.state, opts.rng)}"] += 1
        stack.start_engine_proc()
    return under_load(stack, opts, "state-damage", (5, 9), inject)


def as_json(result: Result) -> dict[str, Any]:
    return {"scenario": result.name, "seconds": round(result.seconds, 1),
            "runs": result.runs, "runs_per_s": round(result.runs_per_s, 1),
            "faults": result.faults, "bad_inputs": result.bad_inputs,
            "violations": result.violations,
            "checks": [c.as_dict() for c in result.checks], "notes": result.notes}
