"""The step-execution ledger a test app writes, and the invariants read from it together
with the runs the API shows.

A ledger line is ``run_id step pid start_ms [end_ms [fn [key]]]``, one O_APPEND write per
execution (tests/integration/apps/ledgered.py writes the first four fields when a step
starts; tests/chaos/app.py writes all of them when it ends).
"""

from __future__ import annotations

import bisect
import datetime
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.checkers.verdict import Check

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class Execution:
    """One execution of one step, as the app recorded it."""

    run_id: str
    step: str
    pid: int
    start_ms: int
    end_ms: int | None = None
    fn: str = ""
    key: str = ""


def parse_ledger(text: str) -> list[Execution]:
    """Every execution in ``text``; a line cut short by a kill -9 is skipped."""
    out = []
    for line in text.splitlines():
        f = line.split()
        try:
            out.append(Execution(f[0], f[1], int(f[2]), int(f[3]),
                                 int(f[4]) if len(f) > 4 else None,
                                 f[5] if len(f) > 5 else "", f[6] if len(f) > 6 else ""))
        except (IndexError, ValueError):
            continue
    return out


def read_ledger(path: Path) -> list[Execution]:
    return parse_ledger(path.read_text()) if path.exists() else []


def ms(at: Any) -> int:
    """A time from a run view in epoch ms: the engine's own views hold ints, the HTTP API
    RFC 3339 strings."""
    if isinstance(at, (int, float)):
        return int(at)
    parsed = datetime.datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    return int(parsed.timestamp() * 1000)


def status(run: Mapping[str, Any]) -> str:
    return str(run.get("status", "")).lower()


def recorded_steps(run: Mapping[str, Any]) -> dict[str, int]:
    """step id -> when its outcome was recorded (first step.completed in the timeline)."""
    out: dict[str, int] = {}
    for e in run.get("timeline") or []:
        if e.get("type") == "step.completed" and e.get("step_id") not in out:
            out[str(e["step_id"])] = ms(e["at"])
    return out


def repeats_after_faults(runs: Iterable[Mapping[str, Any]], executions: list[Execution],
                         faults_ms: list[int],
                         excused: Callable[[int, int, int], bool] | None = None) -> Check:
    """No step whose outcome was recorded before a fault (a kill, a rebalance) starts
    executing again after it. Each execution is charged to the last fault before its
    start; one case per (run, recorded step). ``excused(pid, start_ms, recorded_ms)``
    names executions the documented window allows (tests/checkers/takeovers.py)."""
    check = Check("recorded step never re-run")
    faults = sorted(faults_ms)
    starts: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for e in executions:
        starts[(e.run_id, e.step)].append((e.start_ms, e.pid))
    for run in runs:
        for step, recorded_at in recorded_steps(run).items():
            repeats = [s for s, pid in starts.get((str(run["run_id"]), step), [])
                       if (k := bisect.bisect_right(faults, s) - 1) >= 0
                       and recorded_at < faults[k]
                       and not (excused is not None and excused(pid, s, recorded_at))]
            check.case(not repeats, {"run_id": run["run_id"], "step": step,
                                     "recorded_ms": recorded_at, "rerun_ms": repeats[:3]})
    return check


def exactly_its_runs(runs_by_event: Mapping[str, Sequence[Mapping[str, Any]]],
                     expected: int = 1) -> Check:
    """Every acknowledged event has exactly ``expected`` runs (none lost, none twice)."""
    check = Check("every acked event has exactly its runs")
    for event_id, runs in runs_by_event.items():
        check.case(len(runs) == expected,
                   {"event_id": event_id, "runs": [r.get("run_id") for r in runs]})
    return check


def each_event_in_one_run(event_ids: Iterable[str], runs: Iterable[Mapping[str, Any]]
                          ) -> Check:
    """For batches: every acknowledged event is in exactly one run's ``event_ids``."""
    check = Check("every acked event has exactly its runs")
    seen: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        for e in run.get("event_ids") or [run.get("event_id")]:
            seen[str(e)].append(str(run.get("run_id")))
    for e in event_ids:
        check.case(len(seen.get(e, [])) == 1, {"event_id": e, "runs": seen.get(e, [])})
    return check


def no_run_stuck(runs: Iterable[Mapping[str, Any]]) -> Check:
    """Every run has ended (the caller waited for the campaign's drain time first)."""
    check = Check("no run stuck")
    for run in runs:
        ended = status(run) in TERMINAL
        check.case(ended, None if ended else {
            k: run.get(k) for k in ("run_id", "function_id", "status", "waiting")}
            | {"timeline": (run.get("timeline") or [])[-6:]})
    return check


def timers_never_early(runs: Iterable[Mapping[str, Any]], executions: list[Execution],
                       sleep_step: str, next_step: str) -> Check:
    """The step after a sleep never starts before the sleep's ``until``."""
    check = Check("timers never early")
    starts: dict[tuple[str, str], list[int]] = defaultdict(list)
    for e in executions:
        starts[(e.run_id, e.step)].append(e.start_ms)
    for run in runs:
        until = next((s.get("until") for s in run.get("steps") or []
                      if s.get("id") == sleep_step and s.get("until")), None)
        if until is None:
            continue
        due = ms(until)
        for start in starts.get((str(run["run_id"]), next_step), []):
            check.case(start >= due, {"run_id": run["run_id"], "until_ms": due,
                                      "started_ms": start, "early_ms": due - start})
    return check


def limit_never_exceeded(executions: list[Execution], fn: str, limit: int) -> Check:
    """At no instant more than ``limit`` of ``fn``'s step executions overlap; one case per
    execution start (an end at t closes before a start at t)."""
    check = Check("flow-control limit never exceeded")
    spans = [(e.start_ms, e.end_ms) for e in executions if e.fn == fn and e.end_ms is not None]
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans if e is not None])
    open_now = 0
    for at, delta in points:
        open_now += delta
        if delta > 0:
            check.case(open_now <= limit, {"fn": fn, "at_ms": at, "running": open_now})
    return check


def one_run_per_tick(executions: list[Execution], fn: str) -> Check:
    """Cron: each tick (the ledger's key) started one run."""
    check = Check("one run per cron tick")
    runs: dict[str, set[str]] = defaultdict(set)
    for e in executions:
        if e.fn == fn:
            runs[e.key].add(e.run_id)
    for tick, ids in sorted(runs.items()):
        check.case(len(ids) == 1, {"tick": tick, "runs": sorted(ids)})
    return check
