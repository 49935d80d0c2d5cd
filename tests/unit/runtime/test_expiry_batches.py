"""Dedupe keys expiring inside one batch (a re-fold of history older than the dedupe
window expires one at nearly every record): the state is the same however the records
are batched, and every expired key is gone."""

from __future__ import annotations

from pathlib import Path

from engine.runtime.batch import apply_batch
from engine.store import keys
from engine.store.partition import PartitionStore, state_hash
from tests.unit.fold.builders import requested
from tests.unit.runtime.test_apply import msgs
from topics.records import DEDUPE_WINDOW_MS
from topics.settings import Settings

HOUR = 3_600_000


def fold_in_batches(store: PartitionStore, records: list, size: int) -> None:
    batch = msgs(*records)
    for i in range(0, len(batch), size):
        result = apply_batch(store, batch[i:i + size], Settings(), live_from=0, now_ms=0)
        result.view.commit(result.next_offset)


def test_expiry_gives_the_same_state_in_one_batch_as_record_by_record(tmp_path: Path) -> None:
    # A request every 5 hours for 10 days: each expires the keys of ~5 requests before.
    records = [requested(f"R{i:03d}", ts=1000 + i * 5 * HOUR) for i in range(48)]
    one, many = PartitionStore(tmp_path / "one"), PartitionStore(tmp_path / "many")
    try:
        fold_in_batches(one, records, len(records))
        fold_in_batches(many, records, 1)
        assert state_hash([one]) == state_hash([many])
        last = 1000 + 47 * 5 * HOUR
        held = [k for k, _v in one.scan_values(keys.DEDUPE)]
        # Only the keys of the requests within the window before the last one are held.
        assert len(held) == sum(1000 + i * 5 * HOUR + DEDUPE_WINDOW_MS > last
                                for i in range(48))
        assert len(held) < 10
    finally:
        one.close()
        many.close()
