"""Taking task partitions over (sdk/_handover.py) against the dev broker: which
uncommitted tasks are finished, and which steps a previous owner checkpointed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import confluent_kafka
import pytest

from sdk._handover import finished_ahead
from tests.integration.harness import Stack
from topics import records
from topics.codec import encode

pytestmark = pytest.mark.kafka
EVENT = {"name": "n", "data": {}, "id": "E", "ts": 1}


def task(run_id: str, seq: int, runs_at: list[int] | None) -> records.Task:
    return records.Task(run_id=run_id, fn_id="f", app_id="a", seq=seq, partition_key=f"pk-{run_id}",
                        event=EVENT, events=[], attempt=0, steps={}, step_attempts={}, ts=1,
                        runs_at=runs_at)


def report(run_id: str, seq: int, *steps: str, more: bool) -> records.OutcomesReported:
    return records.OutcomesReported(run_id=run_id, task_seq=seq, worker="w", ts=1, more=more,
                                    outcomes=[records.Outcome(op=records.STEP_COMPLETED,
                                                              step_id=s, output=s.upper())
                                              for s in steps])


def test_checkpoints_and_last_reports_of_uncommitted_tasks_are_found(
        broker: str, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path)
    catalog = stack.catalog
    try:
        # runs partition 1: something else first, then each run's reports.
        stack.produce_raw(catalog.runs, b"not a record", key=b"pk-other", partition=1)
        for rec in (report("R1", 1, "a", more=True), report("R1", 1, "b", more=True),
                    report("R2", 1, "x", more=True), report("R2", 1, "y", more=False),
                    report("R3", 1, "old", more=True)):  # R3's task 1 is superseded
            stack.produce_raw(catalog.runs, encode(rec), key=f"pk-{rec.run_id}".encode(),
                              partition=1)
        # tasks partition 0: R1 and R2 dispatched at runs offset 1; R3 twice.
        for t in (task("R1", 1, [1, 1]), task("R2", 1, [1, 1]), task("R3", 1, [1, 1]),
                  task("R3", 2, [1, 5]), task("R4", 1, None)):
            stack.produce_raw(catalog.tasks, encode(t), key=t.run_id.encode(), partition=0)
        group: Any = confluent_kafka.Consumer({"bootstrap.servers": broker,
                                               "group.id": f"{stack.prefix}handover-test"})
        try:
            found = finished_ahead(stack.settings, group, catalog.tasks, [0], catalog.runs)
        finally:
            group.close()
        # R3's second task supersedes its first (offset 2); R2's last report is on runs
        # (offset 1); R4 names no runs position, so nothing is read for it.
        assert found.done == {0: {1, 2}}
        assert found.progress == {("R1", 1): {"a": {"data": "A"}, "b": {"data": "B"}}}
    finally:
        stack.close()
