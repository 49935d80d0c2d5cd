"""A history written before issue 8's move folds to the same state and emits after it.

``history_v1.msgpack`` (written by ``make_history_v1.py``) holds a ``runs`` partition:
requests, every outcome kind (completed, failed then retried, sleep, wait, invoke),
timers, resolved waits, cancels by event and by API, a finish deadline, endings, a
deduplicated request, cron ticks, and outputs large enough to travel by reference. It
is folded as replay folds it — the batch layer into a RocksDB partition store — and the
state hash and the records it asks to produce must equal the constants computed on the
engine before the move. A change to either is a change of behaviour or wire format.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack
import pytest

from engine.runtime.batch import apply_batch
from engine.store.partition import PartitionStore, state_hash
from topics.codec import encode
from topics.settings import Settings

FIXTURE = Path(__file__).with_name("history_v1.msgpack")
# The task size it folds with (``max_record_bytes``): a quarter of it is the inline
# budget, so outputs above 64 KiB travel by reference.
TASK_BYTES = 256 * 1024
STATE_HASH = "3b716c971f85c1e8fbcb3f332c3e6ceb3f678ddf0c2637f7c1fe6a8d652459ba"
# Issue 9 changed the emits, not the state: every task carries ``runs_at``, and a run
# cancelled while a task was out emits ``task.cancelled`` (3 in this history). With both
# taken out, the hash before issue 9 (c0d6d403...) still holds. Issue 12 added
# ``cancelled_by`` to the data of a cancelled run's function.* events (22d7424f... before).
EMITS_HASH = "cb5472e369483a8e488e63604e35652c0b11df4911bc5197f8d55dd72e2dce54"


@dataclass
class Logged:
    """A record as consumed from partition 0 of ``runs`` (what the batch layer reads)."""

    offset_: int
    value_: bytes

    def topic(self) -> str:
        return "stepstream.runs"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self.value_

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000_000 + self.offset_)


def history() -> list[Logged]:
    values = msgpack.unpackb(FIXTURE.read_bytes(), raw=False)
    return [Logged(i, v) for i, v in enumerate(values)]


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_history_v1_folds_to_the_pinned_state_and_emits(tmp_path: Path, batch_size: int
                                                         ) -> None:
    settings = replace(Settings(), max_record_bytes=TASK_BYTES)
    records = history()
    store = PartitionStore(tmp_path / "runs-0")
    emitted = hashlib.sha256()
    try:
        for i in range(0, len(records), batch_size):
            result = apply_batch(store, records[i:i + batch_size], settings, live_from=0,
                                  now_ms=0)
            assert result.dead == [] and result.applied == len(records[i:i + batch_size])
            result.view.commit(result.next_offset)
            for e in result.emits:
                emitted.update(msgpack.packb([e.topic, e.key, encode(e.record)]))
        assert store.next_offset() == len(records)
        assert (state_hash([store]), emitted.hexdigest()) == (STATE_HASH, EMITS_HASH)
    finally:
        store.close()
