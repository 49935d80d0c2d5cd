"""Damaged RocksDB files (no broker): found on open or on read, never read as "empty",
never blamed on a record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from rocksdict import WriteBatch

from engine.runtime.batch import WAITS_FOLD, apply_batch
from engine.runtime.recovery import StateCorrupt, open_store
from engine.store.partition import PartitionStore
from topics.codec import encode
from topics.records import Event
from topics.settings import Settings


def filled(path: Path) -> Path:
    store = PartitionStore(path)
    for i in range(300):
        batch = WriteBatch(raw_mode=True)
        batch.put(b"w/%05d" % i, os.urandom(300))
        store.write(batch)
    store.db.flush()
    store.close()
    return path


def rot(db: Path) -> None:
    for sst in db.glob("*.sst"):
        with sst.open("r+b") as f:
            f.write(b"\xa5" * (sst.stat().st_size // 2))


class Msg:
    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def topic(self) -> str: return "p.waits"
    def partition(self) -> int: return 0
    def offset(self) -> int: return self._offset
    def key(self) -> Any: return b"k"
    def value(self) -> Any: return self._value
    def timestamp(self) -> tuple[int, int]: return (1, 5000)


def test_a_damaged_block_is_an_error_on_scan_not_an_empty_range(tmp_path: Path) -> None:
    db = filled(tmp_path / "waits-0")
    rot(db)
    store = PartitionStore(db)
    try:
        with pytest.raises(Exception, match=r"^Corruption"):
            store.scan(b"w/")
        with pytest.raises(Exception, match=r"^Corruption"):
            store.verify()
    finally:
        store.close()


def test_the_fold_meeting_damage_raises_instead_of_dead_lettering(tmp_path: Path) -> None:
    db = filled(tmp_path / "waits-0")
    rot(db)
    store = PartitionStore(db)
    event = Event(name="x", data={}, id="E", ts=1)
    try:
        with pytest.raises(StateCorrupt) as caught:
            apply_batch(store, [Msg(0, encode(event))], Settings(), live_from=0, now_ms=0,
                        folder=WAITS_FOLD)
        assert caught.value.path == db
    finally:
        store.close()


def test_open_store_sets_a_damaged_database_aside_and_opens_an_empty_one(
        tmp_path: Path) -> None:
    db = filled(tmp_path / "waits-0")
    rot(db)
    seen: list[StateCorrupt] = []
    store = open_store(db, on_corrupt=seen.append)
    try:
        assert store.verify() == 0
        [damage] = seen
        assert damage.path == db and damage.moved_to is not None
        assert damage.moved_to.name.startswith("waits-0.corrupt-")
        assert "Corruption" in damage.reason and "\n" not in damage.reason
        assert list(damage.moved_to.glob("*.sst"))
    finally:
        store.close()


def test_open_store_leaves_other_errors_alone(tmp_path: Path) -> None:
    db = filled(tmp_path / "waits-0")
    held = PartitionStore(db)  # RocksDB's LOCK: another process holds this database
    try:
        with pytest.raises(Exception, match="lock"):
            open_store(db)
        assert not list(tmp_path.glob("*.corrupt-*"))
    finally:
        held.close()
