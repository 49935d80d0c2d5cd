"""Damaged local state: find it, move it aside, and let the partition be rebuilt.

A partition's RocksDB database is only a cache of what the topics hold, so a database
RocksDB reports corrupt is not repaired: it is moved to ``<dir>.corrupt-<UTC time>``
(kept for inspection, never deleted) and an empty one takes its place, which the
processor restores as a fresh machine would: from the newest snapshot and the tail of
its topic, or from offset 0 (engine/runtime/restore.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from engine.store.partition import PartitionStore, StateMemory


class StateCorrupt(Exception):
    """RocksDB found a partition's database corrupt (``Corruption: ...``)."""

    def __init__(self, path: Path, reason: str, moved_to: Path | None = None) -> None:
        super().__init__(f"{path}: {reason}" + (f"; moved to {moved_to}" if moved_to else ""))
        self.path = path
        self.reason = reason
        self.moved_to = moved_to


def is_corruption(exc: BaseException) -> bool:
    """Whether ``exc`` is RocksDB reporting damaged files (rocksdict raises a plain
    ``Exception`` whose message starts with RocksDB's status name)."""
    return type(exc) is Exception and str(exc).startswith("Corruption")


def reason_of(exc: BaseException) -> str:
    return " ".join(str(exc).split())  # RocksDB's messages span lines; logs want one


def set_aside(path: Path, reason: str) -> StateCorrupt:
    """Move the database at ``path`` to ``<path>.corrupt-<UTC time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    path.rename(aside)
    return StateCorrupt(path, reason, aside)


def open_store(path: Path, memory: StateMemory | None = None,
               on_corrupt: Callable[[StateCorrupt], None] | None = None) -> PartitionStore:
    """Open and verify the partition database at ``path``; if RocksDB finds it corrupt
    (on opening: a truncated ``.sst``, a garbage ``CURRENT``; or in any block), set it
    aside and open an empty one in its place.

    Other errors (a lock held by another process, a full disk) are raised: moving state
    aside would not fix them, and could hide them.
    """
    store: PartitionStore | None = None
    try:
        store = PartitionStore(path, memory=memory)
        store.verify()
        return store
    except Exception as exc:
        if store is not None:
            store.close()  # its RocksDB lock and files, whatever the error
        if not is_corruption(exc):
            raise
        damage = set_aside(path, reason_of(exc))
    if on_corrupt is not None:
        on_corrupt(damage)
    return PartitionStore(path, memory=memory)
