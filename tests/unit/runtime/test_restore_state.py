"""Restore from a snapshot plus history, against real RocksDB stores and the real batch
apply (no broker): the snapshot holds only live state, records that need a finished
run wait for the history load, and the result hashes equal to a full re-fold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.runtime.batch import apply_batch
from engine.runtime.history import HistoryLoader
from engine.store import keys
from engine.store.partition import PartitionStore, state_hash
from tests.unit.fold.builders import report, requested
from tests.unit.runtime.test_apply import Msg, msgs
from topics.records import FUNCTION_COMPLETED, Outcome, Record
from topics.settings import Settings

SETTINGS = Settings()
History = list[tuple[bytes, bytes, int]]


def done(run_id: str, ts: int = 2000) -> Record:
    return report(1, Outcome(op=FUNCTION_COMPLETED, output={"ok": run_id}), ts=ts,
                  run_id=run_id)


def fold(store: PartitionStore, batch: list[Msg], history: History) -> int | None:
    """Apply and commit one batch as the processor does, its archived keys going to
    ``history`` first; the offset it stopped at, if it had to."""
    result = apply_batch(store, batch, SETTINGS, live_from=0, now_ms=0)
    history += [(k, v, result.next_offset) for k, v in result.view.archived()]
    result.view.commit(result.next_offset)
    return result.blocked_at


def requests(*run_ids: str) -> list[Record]:
    return [requested(r, ts=1000 + i) for i, r in enumerate(run_ids)]


# R1-R3 end before the snapshot, R4 is live in it; after it: a new run (R5), R4 ends,
# a zombie's late report for R1 and a re-delivered request of R2 (both finished runs
# the restored store has not loaded yet), then another new run.
BEFORE = [*requests("R1", "R2", "R3", "R4"), done("R1"), done("R2"), done("R3")]
TAIL = [requested("R5", ts=1010), done("R4", ts=2010), done("R1", ts=2020),
        requested("R2", ts=2030), requested("R6", ts=2040)]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[PartitionStore, PartitionStore]]:
    live, restored = PartitionStore(tmp_path / "live"), PartitionStore(tmp_path / "restored")
    yield live, restored
    live.close()
    restored.close()


def test_snapshot_plus_tail_plus_history_hashes_equal_to_the_full_fold(
        stores: tuple[PartitionStore, PartitionStore]) -> None:
    live, restored = stores
    history: History = []
    fold(live, msgs(*BEFORE), history)
    snapshot_at = live.next_offset()
    entries = list(live.live_entries())
    fold(live, msgs(*TAIL, start=snapshot_at), history)

    # The snapshot holds R4 (live) and no finished run, no event index.
    assert keys.run_key("R4") in dict(entries)
    assert not any(k.startswith(keys.EVENT) or k in (keys.run_key("R1"), keys.run_key("R2"),
                                                     keys.run_key("R3")) for k, _v in entries)

    restored.put_entries(entries)
    restored.history_pending = True
    assert restored.next_offset() == snapshot_at
    tail = msgs(*TAIL, start=snapshot_at)
    blocked = fold(restored, tail, [])
    # R5 (new) and R4's end applied; the late report for R1 waits.
    assert blocked == snapshot_at + 2
    assert restored.next_offset() == blocked
    assert restored.get_run("R5") is not None and restored.get_run("R1") is None
    state = restored.get_run("R4")
    assert state is not None and state["status"] == "completed"

    loader = HistoryLoader(SETTINGS, 0, restored, upto=snapshot_at)
    loader._apply([(k, v) for k, v, at in history if at <= snapshot_at])
    restored.history_pending = False
    assert fold(restored, [m for m in tail if m.offset() >= blocked], []) is None

    assert state_hash([restored]) == state_hash([live])


def test_a_loaded_history_never_replaces_a_run_live_in_the_store(
        stores: tuple[PartitionStore, PartitionStore]) -> None:
    live, _restored = stores
    fold(live, msgs(*requests("R1")), [])
    state = live.get_run("R1")
    loader = HistoryLoader(SETTINGS, 0, live, upto=10)
    loader._apply([(keys.run_key("R1"), b"\x80"), (keys.event_run_key("E9", "R9"), b"")])
    assert live.get_run("R1") == state
    assert live.runs_for_event("E9") == ["R9"]


def test_a_store_written_before_the_live_index_gets_one(
        stores: tuple[PartitionStore, PartitionStore]) -> None:
    live, _restored = stores
    fold(live, msgs(*requests("R1", "R2"), done("R1")), [])
    live.db.delete(keys.live_key("R2"))
    assert live.index_live_runs() == 1
    assert {k for k, _v in live.live_entries() if k.startswith(keys.RUN)} == {
        keys.run_key("R2")}
    assert {k for k, _v in live.archived_items() if k.startswith(keys.RUN)} == {
        keys.run_key("R1")}
