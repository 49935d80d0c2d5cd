"""The wait matcher over real RocksDB tables (no broker): order, index, conditions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.expressions import rename_async
from engine.fold import apply_waits
from engine.store import keys
from engine.store.partition import PartitionStore
from engine.store.view import BatchView
from topics.records import Event, Record, WaitCleared, WaitRegistered, WaitResolved


@pytest.fixture
def store(tmp_path: Path) -> PartitionStore:
    s = PartitionStore(tmp_path / "waits-0")
    yield s
    s.close()


class Matcher:
    """Applies records one batch at a time, committing like the processor does."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.offset = 0

    def batch(self, *records: Record, at: int | None = None) -> list[WaitResolved]:
        """``at``: the time the records were appended to ``waits`` (by the engine)."""
        view = BatchView(self.store)
        out: list[WaitResolved] = []
        for r in records:
            for e in apply_waits(view, r, at):
                assert isinstance(e.record, WaitResolved)
                out.append(e.record)
        self.offset += len(records)
        view.commit(self.offset)
        return out


def wait(wait_id: str, value: Any = 42, *, field: str | None = "data.invoice_id",
         if_exp: str | None = None, kind: str = "step", expires: int | None = 100_000,
         ts: int = 1000, trigger: dict[str, Any] | None = None) -> WaitRegistered:
    return WaitRegistered(wait_id=wait_id, run_id=wait_id.split("/")[0], partition_key="P",
                          kind=kind, event="invoice.paid", match_field=field,
                          match_value=value if field else None, if_exp=if_exp,
                          trigger=trigger or {"name": "t", "data": {"invoice_id": value},
                                              "id": "T", "ts": 1},
                          expires_ms=expires, ts=ts)


def paid(value: Any = 42, event_id: str = "E", **data: Any) -> Event:
    return Event(name="invoice.paid", data={"invoice_id": value, **data}, id=event_id,
                 ts=2000)


def test_an_event_after_the_wait_resolves_it_once(store: PartitionStore) -> None:
    m = Matcher(store)
    m.batch(wait("R1/s"))
    [hit] = m.batch(paid())
    assert (hit.run_id, hit.wait_id, hit.kind, hit.event["id"]) == ("R1", "R1/s", "step", "E")
    assert m.batch(paid(event_id="E2")) == []


def test_an_event_before_the_wait_does_not_match(store: PartitionStore) -> None:
    m = Matcher(store)
    assert m.batch(paid(), wait("R1/s")) == []
    # ... and the same order inside one batch, then a later event does.
    assert [h.run_id for h in m.batch(paid(event_id="E3"))] == ["R1"]


def test_wait_and_event_in_one_batch_meet(store: PartitionStore) -> None:
    m = Matcher(store)
    assert [h.wait_id for h in m.batch(wait("R1/s"), paid())] == ["R1/s"]


def test_one_event_resolves_every_wait_on_its_value_and_only_those(
        store: PartitionStore) -> None:
    m = Matcher(store)
    m.batch(*[wait(f"R{i}/s", value=i % 3) for i in range(30)])
    hits = m.batch(paid(value=1))
    assert sorted(h.run_id for h in hits) == sorted(f"R{i}" for i in range(30) if i % 3 == 1)


def test_integral_float_and_int_are_one_value(store: PartitionStore) -> None:
    m = Matcher(store)
    m.batch(wait("R1/s", value=5))
    assert [h.run_id for h in m.batch(paid(value=5.0))] == ["R1"]


def test_if_exp_sees_event_and_async(store: PartitionStore) -> None:
    m = Matcher(store)
    cond = "async.data.amount >= event.data.min && async.data.note != 'async'"
    trigger = {"name": "t", "data": {"min": 10}, "id": "T", "ts": 1}
    m.batch(wait("R1/s", field=None, if_exp=cond, trigger=trigger))
    assert m.batch(paid(amount=5, note="x")) == []
    assert m.batch(paid(amount=15, note="async")) == []
    assert [h.run_id for h in m.batch(paid(amount=15, note="x"))] == ["R1"]


def test_cleared_wait_no_longer_matches(store: PartitionStore) -> None:
    m = Matcher(store)
    m.batch(wait("R1/s"))
    m.batch(WaitCleared(wait_id="R1/s", event="invoice.paid", match_field="data.invoice_id",
                        match_value=42, ts=1500))
    assert m.batch(paid()) == []


def test_expired_waits_are_dropped_when_engine_time_passes(store: PartitionStore) -> None:
    m = Matcher(store)
    m.batch(wait("R1/s", expires=5000))
    # An event's own (sender's) time does not expire anything...
    far = Event(name="invoice.paid", data={"invoice_id": 7}, id="X", ts=10**12)
    m.batch(far)
    # ... a later engine record does.
    m.batch(wait("R2/s", value=9, ts=6000))
    assert m.batch(paid()) == []
    assert [h.run_id for h in m.batch(paid(value=9))] == ["R2"]


def test_a_wait_does_not_resolve_on_an_event_appended_after_it_expired(
        store: PartitionStore) -> None:
    m = Matcher(store)
    m.batch(wait("R1/cancel:0", kind="cancel", expires=3000, ts=0))
    m.batch(wait("R2/cancel:0", kind="cancel", expires=5000, ts=0))
    # The sender says 2000; the engine forwarded it at 5000: both rules are over (a
    # rule holds while its expiry is after the append time).
    assert paid().ts == 2000
    assert m.batch(paid(), at=5000) == []
    # And a wait expired before that time is gone, not left for a later event.
    assert [k for k, _ in store.scan(keys.INDEXED) if k.endswith(b"R1/cancel:0")] == []


def test_a_wait_resolves_on_an_event_appended_before_it_expired_whatever_its_sender_time(
        store: PartitionStore) -> None:
    m = Matcher(store)
    m.batch(wait("R1/s", expires=3000, ts=0))
    far = Event(name="invoice.paid", data={"invoice_id": 42}, id="X", ts=10**12)
    [hit] = m.batch(far, at=2999)
    assert hit.run_id == "R1"


def test_rename_async_leaves_strings_alone() -> None:
    assert (rename_async("async.x == 'async' && event.async_y == \"a async\"")
            == "async_.x == 'async' && event.async_y == \"a async\"")
