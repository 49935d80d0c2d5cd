"""Where a stepstream run's latency goes: a per-hop breakdown read back from the log.

After a latency benchmark, the ``runs`` and ``tasks`` topics are read from the start
(until partition EOF; Tansu's high watermarks cannot be trusted) and, for the measured
runs, the time between consecutive records is split into hops. Record times are the
producers' CreateTime (taken when the record was produced), step times come from the
outcomes; all clocks are this machine's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

import msgpack

from bench.common import percentile, read_topics
from topics.catalog import Catalog
from topics.settings import Settings

HOPS = (
    ("event -> run requested", "send to routed: events fetch + engine batch"),
    ("run requested -> task 1", "runs fetch + fold + produce"),
    ("task -> first step started", "tasks fetch + worker queue + replay of memoized steps"),
    ("step execution", "a step's handler, started to ended"),
    ("step ended -> next step started", "run-ahead: checkpoint produced and acknowledged + "
                                        "replay, inside one pass"),
    ("last step ended -> report produced", "the pass's last report (the function's end, "
                                           "or a step that needs the engine)"),
    ("report -> next task", "runs fetch + fold + produce, between passes"),
)


@dataclass
class Passes:
    """What the log says of runs' passes: record CreateTimes (ms) of ``run.requested``
    and of each task (by run and task seq), step start/end times within each pass, the
    pass's final report (``more`` false), and each run's concurrency gate keys."""

    requested: dict[str, int] = field(default_factory=dict)
    tasks: dict[tuple[str, int], int] = field(default_factory=dict)
    steps: dict[tuple[str, int], list[tuple[int, int]]] = field(
        default_factory=lambda: defaultdict(list))
    finals: dict[tuple[str, int], int] = field(default_factory=dict)
    gates: dict[str, list[str]] = field(default_factory=dict)


def read_passes(settings: Settings, runs: Container[str] | None = None) -> Passes:
    """Read ``runs`` and ``tasks`` back from the start for the runs in ``runs`` (None:
    every run on the prefix)."""
    catalog = Catalog(settings)
    out = Passes()
    for m in read_topics(settings, [catalog.runs, catalog.tasks]):
        body = msgpack.unpackb(m.value(), raw=False)
        run_id = body.get("run_id")
        if runs is not None and run_id not in runs:
            continue
        created = m.timestamp()[1]
        kind = body.get("k")
        if kind == "run.requested":
            out.requested.setdefault(run_id, created)
            flow = body.get("flow") or {}
            out.gates.setdefault(run_id, [str(g.get("gate"))
                                          for g in flow.get("concurrency") or ()])
        elif kind == "task":
            out.tasks.setdefault((run_id, body["seq"]), created)
        elif kind == "outcomes.reported":
            key = (run_id, body["task_seq"])
            if key in out.finals:
                continue  # a duplicate after the pass ended
            for o in body.get("outcomes", ()):
                if o.get("started_at") is not None and o.get("ended_at") is not None:
                    out.steps[key].append((o["started_at"], o["ended_at"]))
            if not body.get("more"):
                out.finals[key] = created
    return out


def hop_breakdown(settings: Settings, runs: dict[str, int]) -> dict[str, Any]:
    """``runs`` maps run id -> the event's send time (ms). Returns p50/p90 per hop (ms)."""
    passes = read_passes(settings, runs)
    requested, tasks, steps, finals = (passes.requested, passes.tasks, passes.steps,
                                       passes.finals)
    hops: dict[str, list[float]] = defaultdict(list)
    for run_id, sent in runs.items():
        if run_id in requested:
            hops[HOPS[0][0]].append(requested[run_id] - sent)
            if (run_id, 1) in tasks:
                hops[HOPS[1][0]].append(tasks[(run_id, 1)] - requested[run_id])
        seq = 1
        while (run_id, seq) in tasks and (run_id, seq) in finals:
            key = (run_id, seq)
            ran = sorted(steps.get(key, []))
            if ran:
                hops[HOPS[2][0]].append(ran[0][0] - tasks[key])
                for (started, ended), following in zip(ran, [*ran[1:], None], strict=True):
                    hops[HOPS[3][0]].append(ended - started)
                    if following is not None:
                        hops[HOPS[4][0]].append(following[0] - ended)
                hops[HOPS[5][0]].append(finals[key] - ran[-1][1])
            if (run_id, seq + 1) in tasks:
                hops[HOPS[6][0]].append(tasks[(run_id, seq + 1)] - finals[key])
            seq += 1
    out: dict[str, Any] = {}
    for name, what in HOPS:
        values = hops.get(name, [])
        out[name] = {"what": what, "count": len(values), "p50_ms": percentile(values, 50),
                     "p90_ms": percentile(values, 90)}
    return out
