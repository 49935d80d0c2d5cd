"""The batch apply (no broker, a real RocksDB store): what one batch of raw ``runs``
records does to a partition's tables, when a handler raises, and on records already
applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import fold
from engine.runtime.batch import RUNS_FOLD, BatchResult, Fold, apply_batch
from engine.store.partition import PartitionStore
from topics.codec import encode
from topics.records import (
    STEP_COMPLETED,
    Event,
    Outcome,
    OutcomesReported,
    Record,
    RunRequested,
    Task,
)
from topics.settings import Settings

SETTINGS = Settings()


class Msg:
    """A consumed ``runs`` record, as the processor hands it to the batch apply."""

    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def topic(self) -> str: return "p.runs"
    def partition(self) -> int: return 0
    def offset(self) -> int: return self._offset
    def key(self) -> Any: return b"k"
    def value(self) -> Any: return self._value
    def timestamp(self) -> tuple[int, int]: return (1, 5000)


def requested(run_id: str, ts: int = 1000) -> RunRequested:
    event = {"name": "shop/order.created", "data": {}, "id": f"E-{run_id}", "ts": ts}
    return RunRequested(run_id=run_id, fn_id="shop-process-order", app_id="shop",
                        partition_key=run_id, event=event, events=[event], retries=2,
                        backoff_base_ms=1000, ts=ts)


def step_done(run_id: str, step_id: str) -> OutcomesReported:
    return OutcomesReported(run_id=run_id, task_seq=1, worker="w", ts=2000,
                            outcomes=[Outcome(op=STEP_COMPLETED, step_id=step_id, output=1)])


def msgs(*records: Record | bytes, start: int = 0) -> list[Msg]:
    return [Msg(start + i, r if isinstance(r, bytes) else encode(r))
            for i, r in enumerate(records)]


def task_runs(result: BatchResult) -> list[str]:
    return [e.record.run_id for e in result.emits if isinstance(e.record, Task)]


def applied(store: PartitionStore, batch: list[Msg], *, live_from: int = 0,
            folder: Fold = RUNS_FOLD) -> BatchResult:
    """Apply and commit one batch, as the processor does."""
    result = apply_batch(store, batch, SETTINGS, live_from=live_from, now_ms=0,
                         folder=folder)
    result.view.commit(result.next_offset)
    return result


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PartitionStore]:
    s = PartitionStore(tmp_path / "runs-0")
    yield s
    s.close()


class RaisingOnReports:
    """The run fold, with a handler bug: a report is applied (changing the run's state
    in place) and then the handler raises. Counts what it was given, by run and offset."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, tables: Any, rec: Any, at: fold.Position, limits: fold.Limits,
                 log_ms: int | None) -> list[fold.Emit]:
        self.calls.append((rec.run_id, at.offset))
        emits = RUNS_FOLD.apply(tables, rec, at, limits, log_ms)
        if isinstance(rec, OutcomesReported):
            raise RuntimeError("handler bug")
        return emits


def test_a_handler_raising_mid_batch_dead_letters_its_record_and_refolds_the_rest(
        store: PartitionStore) -> None:
    applied(store, msgs(requested("R1")))
    before = store.get_run("R1")
    assert before is not None and before["waiting"]["kind"] == "task"
    buggy = RaisingOnReports()

    result = applied(store, msgs(requested("R2"), step_done("R1", "a"), requested("R3"),
                                 start=1), folder=Fold(buggy, RUNS_FOLD.expect))

    assert [(d.offset, d.reason) for d in result.dead] == [
        (2, "fold error: RuntimeError: handler bug")]
    assert result.dead[0].value == encode(step_done("R1", "a"))
    # The batch was folded again without the bad record: R2 twice, the report once.
    assert buggy.calls == [("R2", 1), ("R1", 2), ("R2", 1), ("R3", 3)]
    assert task_runs(result) == ["R2", "R3"]
    assert (result.applied, result.next_offset, store.next_offset()) == (2, 4, 4)
    # Nothing of the half-applied report survives, in RocksDB or in the state cache
    # the next batch reads first.
    assert store.get_run("R1") == before
    assert store.cached_run("R1") == before
    for run_id in ("R2", "R3"):
        state = store.get_run(run_id)
        assert state is not None
        assert [t["type"] for t in state["timeline"]] == ["run.requested", "task.dispatched"]


def test_the_report_applies_when_the_handler_does_not_raise(store: PartitionStore) -> None:
    # The control for the test above: the same report, through the real fold, changes R1.
    applied(store, msgs(requested("R1")))
    result = applied(store, msgs(step_done("R1", "a"), start=1))
    state = store.get_run("R1")
    assert state is not None and "a" in state["steps"]
    assert (result.dead, task_runs(result)) == ([], ["R1"])


def test_undecodable_and_misplaced_records_are_dead_letters_and_the_rest_applies(
        store: PartitionStore) -> None:
    event = Event(name="x", data={}, id="E", ts=1)
    result = applied(store, msgs(b"\x00junk", requested("R1"), event))
    assert [d.offset for d in result.dead] == [0, 2]
    assert result.dead[0].reason.startswith("undecodable: ")
    assert result.dead[1].reason.startswith("undecodable: ")
    assert "event" in result.dead[1].reason
    assert (task_runs(result), result.applied, store.next_offset()) == (["R1"], 1, 3)


def test_offsets_already_applied_are_skipped(store: PartitionStore) -> None:
    applied(store, msgs(requested("R1"), requested("R2")))
    seen: list[int] = []

    def counting(tables: Any, rec: Any, at: fold.Position, limits: fold.Limits,
                 log_ms: int | None) -> list[fold.Emit]:
        seen.append(at.offset)
        return RUNS_FOLD.apply(tables, rec, at, limits, log_ms)

    # A redelivery from before the stored offset, then two new records: the old ones
    # are not folded again, not even decoded (offset 0 is garbage now and is not
    # dead-lettered), and the report at offset 1's place is not applied twice.
    result = applied(store, msgs(b"\x00junk", step_done("R1", "a"), requested("R3"),
                                 step_done("R1", "b")),
                     folder=Fold(counting, RUNS_FOLD.expect))
    assert seen == [2, 3]
    assert result.dead == []
    assert (result.applied, store.next_offset()) == (2, 4)
    state = store.get_run("R1")
    assert state is not None and list(state["steps"]) == ["b"]


def test_records_below_live_from_rebuild_state_but_emit_nothing(store: PartitionStore
                                                                 ) -> None:
    # Replay: these records were processed before; their tasks and dead letters exist.
    result = applied(store, msgs(requested("R1"), b"\x00junk", requested("R2")), live_from=2)
    assert (result.dead, task_runs(result)) == ([], ["R2"])
    assert store.get_run("R1") is not None and store.get_run("R2") is not None
