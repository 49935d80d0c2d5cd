"""Where a stepstream run's latency goes: a per-hop breakdown read back from the log.

After a latency benchmark, the ``runs`` and ``tasks`` topics are read from the start
(until partition EOF; Tansu's high watermarks cannot be trusted) and, for the measured
runs, the time between consecutive records is split into hops. Record times are the
producers' CreateTime (taken when the record was produced), step times come from the
outcomes; all clocks are this machine's.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgpack

from bench.common import percentile, read_topics
from topics.catalog import Catalog
from topics.settings import Settings

HOPS = (
    ("event -> run requested", "send to routed: events fetch + engine batch"),
    ("run requested -> task 1", "runs fetch + fold + produce"),
    ("task -> step started", "tasks fetch + worker queue + replay of memoized steps"),
    ("step started -> outcome produced", "step execution + building the report"),
    ("outcome -> next task", "report ack + runs fetch + fold + produce"),
    ("last task -> completion produced", "tasks fetch + replay of all steps + report"),
)


def hop_breakdown(settings: Settings, runs: dict[str, int]) -> dict[str, Any]:
    """``runs`` maps run id -> the event's send time (ms). Returns p50/p90 per hop (ms)."""
    catalog = Catalog(settings)
    requested: dict[str, int] = {}
    tasks: dict[tuple[str, int], int] = {}
    reports: dict[tuple[str, int], tuple[int, int | None]] = {}
    for m in read_topics(settings, [catalog.runs, catalog.tasks]):
        body = msgpack.unpackb(m.value(), raw=False)
        run_id = body.get("run_id")
        if run_id not in runs:
            continue
        created = m.timestamp()[1]
        kind = body.get("k")
        if kind == "run.requested":
            requested.setdefault(run_id, created)
        elif kind == "task":
            tasks.setdefault((run_id, body["seq"]), created)
        elif kind == "outcomes.reported":
            started = next((o.get("started_at") for o in body.get("outcomes", ())
                            if o.get("started_at") is not None), None)
            reports.setdefault((run_id, body["task_seq"]), (created, started))
    hops: dict[str, list[float]] = defaultdict(list)
    for run_id, sent in runs.items():
        if run_id in requested:
            hops[HOPS[0][0]].append(requested[run_id] - sent)
            if (run_id, 1) in tasks:
                hops[HOPS[1][0]].append(tasks[(run_id, 1)] - requested[run_id])
        seq = 1
        while (run_id, seq) in tasks and (run_id, seq) in reports:
            report_at, started = reports[(run_id, seq)]
            if started is not None:
                hops[HOPS[2][0]].append(started - tasks[(run_id, seq)])
                hops[HOPS[3][0]].append(report_at - started)
            else:
                hops[HOPS[5][0]].append(report_at - tasks[(run_id, seq)])
            if (run_id, seq + 1) in tasks:
                hops[HOPS[4][0]].append(tasks[(run_id, seq + 1)] - report_at)
            seq += 1
    out: dict[str, Any] = {}
    for name, what in HOPS:
        values = hops.get(name, [])
        out[name] = {"what": what, "count": len(values), "p50_ms": percentile(values, 50),
                     "p90_ms": percentile(values, 90)}
    return out
