"""Bounded restore on the real broker: a partition moved to an engine with an empty
state directory restores from its newest complete snapshot, re-folds only the tail of
``runs`` after it, loads its finished runs from ``history`` in the background, and ends
with the same state hash as the engine it moved from. A snapshot whose writer was
killed before its end marker is passed over for the one before."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

import sdk
from engine.runtime.processor import Processor
from engine.store import keys
from engine.store.partition import PartitionStore
from tests.integration.harness import Stack, wait_for
from topics import snapshots as wire

pytestmark = pytest.mark.kafka

FINISHED_BEFORE, LIVE, FINISHED_AFTER = 12, 3, 4


def make_client(settings: Any) -> sdk.Client:
    client = sdk.Client(app_id="restore", settings=settings)

    @client.create_function(fn_id="restore-fn", trigger=sdk.TriggerEvent(event="restore/go"))
    async def handler(ctx: sdk.Context) -> Any:
        got = await ctx.step.run("work", lambda: ctx.event.data["n"] * 2)
        if ctx.event.data.get("park"):
            await ctx.step.wait_for_event("later", event="restore/never", timeout="1h")
        return got

    return client


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(broker, tmp_path, partitions=2)
    s.settings = dataclasses.replace(s.settings, snapshot_interval_ms=200)
    client = make_client(s.settings)
    try:
        s.start_engine(tmp_path / "first")
        s.start_worker(client)
        s.client = client
        s.wait_functions("restore-restore-fn")
        yield s
    finally:
        s.close()
        client.close()


def run_of(stack: Stack, event_id: str) -> dict[str, Any] | None:
    runs = stack.runs_for(event_id)
    return runs[0] if runs else None


def snapshots_cover_everything(processor: Processor) -> bool:
    """Every runs partition's newest snapshot is at its stored offset."""
    stores = dict(processor.stores)
    return all(processor.snapshots.written.get(("runs", p), (0, -1))[1] == store.next_offset()
               for p, store in stores.items() if store.next_offset() > 0)


def append_a_killed_snapshot(stack: Stack) -> None:
    """On every partition, what a writer killed after one chunk leaves: a begin marker
    claiming a far offset, and a chunk; no end marker."""
    producer = Producer({"bootstrap.servers": stack.settings.brokers})
    for p in range(stack.settings.partitions):
        key = wire.record_key("runs", p)
        producer.produce(stack.catalog.snapshots, wire.encode(
            wire.Begin("KILLED", "runs", p, 10**9, 0)), key, partition=p)
        producer.produce(stack.catalog.snapshots, wire.encode(
            wire.Chunk("KILLED", 0, b"\x00\x00\x00\x02r/")), key, partition=p)
    assert producer.flush(10) == 0


def test_a_moved_partition_restores_from_its_snapshot_and_loads_finished_runs_after(
        stack: Stack, tmp_path: Path) -> None:
    before = [stack.send("restore/go", {"n": i}) for i in range(FINISHED_BEFORE)]
    parked = [stack.send("restore/go", {"n": i, "park": True}) for i in range(LIVE)]
    for event_id in before:
        stack.finished_run(event_id)
    wait_for(lambda: all((r := run_of(stack, e)) and (r.get("waiting") or {}).get("kind")
                         == "event" for e in parked), 30, "the parked runs to wait")
    assert stack.engine is not None
    first = stack.engine.processor
    wait_for(lambda: snapshots_cover_everything(first), 30, "snapshots of every partition")
    snapshot_at = {p: s.next_offset() for p, s in first.stores.items()}
    # Runs that finish after the snapshot: the restore re-folds these from runs.
    after = [stack.send("restore/go", {"n": 100 + i}) for i in range(FINISHED_AFTER)]
    for event_id in after:
        stack.finished_run(event_id)
    ends = {p: s.next_offset() for p, s in first.stores.items()}
    first.snapshots.interval_ms = 0  # no newer snapshot than the one measured above
    expected_hash = stack.engine.queries.state_hash()
    stack.engine.stop()
    append_a_killed_snapshot(stack)

    # The partitions move to an engine with nothing on disk.
    engine = stack.start_engine(tmp_path / "second")
    second = engine.processor
    reports = {p: second.restorer.restored[("runs", p)] for p in range(2)}
    for p, report in reports.items():
        if ends.get(p, 0) == 0:
            continue
        # The newest complete snapshot, not the killed one after it.
        assert report.snapshot_offset is not None
        assert report.snapshot_offset >= snapshot_at[p]
    wait_for(lambda: all(s.next_offset() >= ends.get(p, 0)
                         for p, s in second.stores.items()), 30, "the tail re-folded")
    # Only the tail after each snapshot was read from runs, not the whole topic (the
    # records re-folded are the processor's own count).
    tail = sum(ends.get(p, 0) - (r.snapshot_offset or 0) for p, r in reports.items())
    assert tail < sum(ends.values()) // 2
    assert second.applied_runs < sum(ends.values()) // 2

    wait_for(lambda: all(r.done.is_set() for r in reports.values()), 30,
             "the finished runs loaded from history")
    assert all(r.history_entries for p, r in reports.items() if ends.get(p, 0))
    for event_id in before:
        run = run_of(stack, event_id)
        assert run is not None and run["status"] == "completed"
    for event_id in parked:
        run = run_of(stack, event_id)
        assert run is not None and (run.get("waiting") or {}).get("kind") == "event"
    assert engine.queries.state_hash() == expected_hash
    # And the restored partitions go on with new work.
    stack.finished_run(stack.send("restore/go", {"n": 999}))


def test_a_history_load_cut_short_goes_on_after_a_restart(stack: Stack, tmp_path: Path
                                                          ) -> None:
    done = [stack.send("restore/go", {"n": i}) for i in range(6)]
    for event_id in done:
        stack.finished_run(event_id)
    assert stack.engine is not None
    wait_for(lambda: snapshots_cover_everything(stack.engine.processor), 30, "snapshots")
    expected_hash = stack.engine.queries.state_hash()
    run = run_of(stack, done[0])
    assert run is not None
    stack.engine.stop()
    # What a restore killed mid-load leaves: the snapshot's entries and the pending
    # mark, with the finished runs not yet there.
    moved = stack.start_engine(tmp_path / "moved")
    wait_for(lambda: all(r.done.is_set() for r in moved.processor.restorer.restored.values()),
             30, "the history loaded")
    moved.stop()
    p = next(p for p in range(2) if (tmp_path / "moved" / f"runs-{p}").exists()
             and _holds(tmp_path / "moved" / f"runs-{p}", run["run_id"]))
    _cut_short(tmp_path / "moved" / f"runs-{p}", run["run_id"])

    again = stack.start_engine(tmp_path / "moved")
    report = again.processor.restorer.restored.get(("runs", p))
    assert report is not None and report.snapshot_offset is not None  # loading again
    wait_for(report.done.is_set, 30, "the interrupted load to finish")
    back = run_of(stack, done[0])
    assert back is not None and back["status"] == "completed"
    assert again.queries.state_hash() == expected_hash


def _holds(db: Path, run_id: str) -> bool:
    store = PartitionStore(db)
    try:
        return store.get_run(run_id) is not None
    finally:
        store.close()


def _cut_short(db: Path, run_id: str) -> None:
    store = PartitionStore(db)
    try:
        offset = store.next_offset()
        store.db.delete(keys.run_key(run_id))
        store.put_entries([(keys.HISTORY_PENDING, keys.offset_value(offset))])
    finally:
        store.close()
