"""The work behind a 3-step run in the burst: records written to every stepstream topic
and produce requests sent by the engine and the worker, each divided by the runs.

Records: every topic of the prefix is read from where it ended before the burst to its
end after it (partition EOF: Tansu's high watermarks cannot be trusted), once the
engine's consumer lag is zero both times, so the count holds everything the runs caused
(the event, ``run.requested``, tasks, outcomes, ``function.*`` events and their copies).

Produce requests: the engine and the worker run with ``STEPSTREAM_PRODUCER_STATS_MS``
(topics/producer_stats.py): their producers log librdkafka's counts as they change and
once more when they close. The last line each logged before the burst is subtracted
from its final line. The engine's producer is polled only while it works, so its last
line before the burst can miss up to ``STATS_MS`` of the warm-up's last requests, which
are then counted for the burst (a few requests in thousands).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from topics.catalog import Catalog
from topics.producer_stats import ProduceCounts, parse_line
from topics.settings import Settings

STATS_MS = 500
QUIET_TIMEOUT_S = 120.0

Ends = dict[tuple[str, int], int]


def topic_ends(settings: Settings, start: Ends | None = None, timeout: float = 120.0
               ) -> tuple[Ends, dict[str, int]]:
    """Where every stepstream topic ends (next offset per partition), read from ``start``
    (else offset 0), and how many records each topic had past ``start``."""
    cat = Catalog(settings)
    parts = [TopicPartition(s.name, p, (start or {}).get((s.name, p), 0))
             for s in cat.specs for p in range(s.partitions)]
    ends: Ends = {(tp.topic, tp.partition): tp.offset for tp in parts}
    counts = {s.name.removeprefix(settings.prefix): 0 for s in cat.specs}
    c = Consumer({"bootstrap.servers": settings.brokers, "group.id": "work-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "fetch.wait.max.ms": settings.fetch_wait_max_ms})
    c.assign(parts)
    pending = set(ends)
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.2):
                topic, p = m.topic() or "", m.partition() or 0
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((topic, p))
                    continue
                ends[(topic, p)] = (m.offset() or 0) + 1
                counts[topic.removeprefix(settings.prefix)] += 1
    finally:
        c.close()
    if pending:
        raise TimeoutError(f"topics not read to their end in {timeout:g}s: {sorted(pending)}")
    return ends, counts


def wait_quiet(system: Any, timeout: float = QUIET_TIMEOUT_S) -> None:
    """Until the engine reports zero consumer lag (``GET /health``)."""
    deadline = time.monotonic() + timeout
    while system.engine_lag() != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"engine lag not zero within {timeout:g}s")
        time.sleep(0.1)


def before(system: Any) -> dict[str, Any]:
    """What is needed to count the work of what follows."""
    wait_quiet(system)
    ends, _ = topic_ends(system.settings)
    logs = {c.name: c.log.stat().st_size for c in system.children}
    return {"ends": ends, "logs": logs}


def records_after(system: Any, mark: dict[str, Any], runs: int) -> dict[str, Any]:
    """Records written since ``mark`` (:func:`before`), per topic and per run."""
    wait_quiet(system)
    _, counts = topic_ends(system.settings, mark["ends"])
    total = sum(counts.values())
    return {"runs": runs, "records": total, "records_per_run": total / runs,
            "records_by_topic": {k: v for k, v in counts.items() if v}}


def produce_requests(logs: dict[str, Path], mark: dict[str, Any], runs: int
                     ) -> dict[str, Any]:
    """Produce requests since ``mark``, from the stats lines of the stopped processes'
    ``logs`` (name -> path)."""
    out: dict[str, Any] = {}
    total = 0
    complete = True
    for name, path in logs.items():
        text = path.read_bytes()
        cut = mark["logs"].get(name, 0)
        first: dict[str, ProduceCounts] = {}
        final: dict[str, ProduceCounts] = {}
        for line in text[:cut].decode(errors="replace").splitlines():
            if (found := parse_line(line)) is not None:
                first[found[0]] = found[1]
        for line in text[cut:].decode(errors="replace").splitlines():
            if (found := parse_line(line)) is not None and line.endswith(" final"):
                final[found[0]] = found[1]
        if not final:
            complete = False
        for client, counts in final.items():
            base = first.get(client, ProduceCounts())
            sent = counts.produce_requests - base.produce_requests
            out[f"{name}_produce_requests"] = out.get(f"{name}_produce_requests", 0) + sent
            total += sent
    if complete:
        out["produce_requests"] = total
        out["produce_requests_per_run"] = total / runs
    else:
        out["produce_requests_error"] = "a process logged no final producer stats"
    return out
