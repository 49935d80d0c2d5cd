"""The scale-out benchmark's own logic (bench/scale.py), without a broker: a worker's
partitions read from its log, a settled group, the summary line, the producers' totals,
the sustained verdict, and the plan's arithmetic."""

from __future__ import annotations

import math
from pathlib import Path

from bench.scale import (
    PerRun,
    assignment_summary,
    covers,
    plan,
    producer_totals,
    sustained_ok,
    worker_partitions,
)

LOG = """\
2026-12-01 06:47:01,1 INFO sdk._worker: worker w-a: connecting to 127.0.0.1:1 (from env)
2026-12-01 06:47:02,1 INFO sdk._consumer: worker w-a: assigned [0, 1, 2, 3, 4, 5, 6, 7]
2026-12-01 06:47:05,1 INFO sdk._consumer: worker w-a: revoked [0, 1, 2, 3, 4, 5, 6, 7]
2026-12-01 06:47:05,2 INFO sdk._consumer: worker w-a: assigned [3, 4, 5]
"""


def test_a_worker_owns_its_last_assignment_less_what_it_revoked_since() -> None:
    assert worker_partitions(LOG) == [3, 4, 5]
    assert worker_partitions(LOG + "x INFO worker w-a: revoked [3, 4, 5]\n") == []
    assert worker_partitions(LOG + "x INFO worker w-a: assigned []\n") == []
    # Nothing logged yet (still joining), or only a revocation: unknown, not empty.
    assert worker_partitions("worker w-a: connecting\n") is None
    assert worker_partitions("worker w-a: revoked [1]\n") is None


def test_a_group_is_settled_when_its_members_own_every_partition_once() -> None:
    assert covers({"w1": [0, 1, 2], "w2": [3]}, 4)
    assert not covers({"w1": [0, 1, 2], "w2": None}, 4)  # one has not logged yet
    assert not covers({"w1": [0, 1, 2], "w2": [2, 3]}, 4)  # a handover in progress
    assert not covers({"w1": [0, 1]}, 4)  # some partitions owned by no one
    assert not covers({}, 4)


def test_the_summary_collapses_runs_of_partitions() -> None:
    assert assignment_summary({"engine1": [0, 1, 2, 3], "engine2": [4, 5, 7],
                               "worker1": [], "worker2": None}) == \
        "engine1 0-3, engine2 4-5,7, worker1 none, worker2 ?"


def test_producer_totals_take_each_clients_last_line_per_log(tmp_path: Path) -> None:
    a, b = tmp_path / "engine1.log", tmp_path / "worker1.log"
    line = "INFO stepstream.stats: producer stats: client={} records={} " \
           "produce_requests=1 requests=2 bytes={}"
    a.write_text("\n".join([line.format("eng", 10, 1000), line.format("eng", 30, 3000),
                            line.format("eng-b", 5, 50) + " final"]) + "\n")
    # The same client id in another process's log is another producer.
    b.write_text(line.format("eng", 7, 700) + " final\nnoise\n")
    assert producer_totals([a, b]) == {"records": 42, "bytes": 3750}


def test_sustained_means_every_run_done_with_p99_under_two_seconds() -> None:
    assert sustained_ok({"runs": 10, "completed": 10, "p99_ms": 1999.0})
    assert not sustained_ok({"runs": 10, "completed": 10, "p99_ms": 2000.0})
    assert not sustained_ok({"runs": 10, "completed": 9, "p99_ms": 10.0})
    assert not sustained_ok({"runs": 10, "completed": 10, "p99_ms": math.nan})
    assert not sustained_ok({"runs": 10, "completed": 10, "p99_ms": 5.0, "error": "x"})


def test_the_plan_divides_the_target_by_the_measured_costs() -> None:
    m = PerRun(engine_cpu_ms=0.5, worker_cpu_ms=0.7, fold_records_per_s=20_000,
               folded_records=4, records=8, bytes=2500, state_bytes=1000,
               routed_events_per_s=6000)
    p = plan(100_000, m, hold_s=0.1, cpu_use=0.5, headroom=2, rf=3, broker_write_mb_s=150,
             reads=1)
    assert p["engines"] == 100  # 100k x 0.5 ms = 50 cores, each used at half
    assert p["workers"] == 140
    assert p["partitions"] == 512  # 2 x 140 = 280, up to a power of two
    assert p["runs_per_partition"] == 100_000 / 512
    assert p["fold_runs_per_partition_max"] == 5000
    assert p["event_names_min"] == 17  # 100k / 6,000 per name's partition, up
    assert p["slots"] == 10_000 and p["concurrency_per_worker"] == 72  # 10,000 / 140 up
    assert p["records_per_s"] == 800_000
    assert p["in_mb_s"] == 250 and p["written_mb_s"] == 750 and p["out_mb_s"] == 750
    assert p["brokers_for_writes"] == 5
    assert math.isclose(p["state_mb_per_partition_per_s"], 100_000 * 1000 / 512 / 1e6)
