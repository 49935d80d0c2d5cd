"""Worker bookkeeping with no I/O: commit positions and stale-task detection."""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Partition:
    pending: set[int] = field(default_factory=set)
    heap: list[int] = field(default_factory=list)  # pending offsets, lazily pruned
    high: int = -1  # highest offset seen
    reported: int | None = None  # last position handed out for commit
    # Offsets ahead of the committed position known to be finished (a later task of
    # the same run follows them), found when the partition was assigned.
    known_done: set[int] = field(default_factory=set)

    def position(self) -> int | None:
        while self.heap and self.heap[0] not in self.pending:
            heapq.heappop(self.heap)
        if self.heap:
            return self.heap[0]
        return self.high + 1 if self.high >= 0 else None


class OffsetTracker:
    """Which offsets of each partition are still being worked on.

    The commit position of a partition is its lowest in-flight offset, or one past
    the highest offset seen when nothing is in flight: every record below it is done,
    so committing it never skips unfinished work. Thread-safe: the consumer's
    rebalance callbacks run on another thread than the tasks.
    """

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}
        self._lock = threading.Lock()

    def start(self, partition: int, offset: int) -> None:
        """Record ``offset`` as received and not yet done."""
        with self._lock:
            part = self._parts.setdefault(partition, _Partition())
            if offset in part.pending:
                return
            part.pending.add(offset)
            heapq.heappush(part.heap, offset)
            part.high = max(part.high, offset)

    def done(self, partition: int, offset: int) -> None:
        """Record ``offset`` as finished; unknown offsets are ignored (e.g. revoked)."""
        with self._lock:
            part = self._parts.get(partition)
            if part is not None:
                part.pending.discard(offset)

    def skip(self, partition: int, offset: int) -> None:
        """Record ``offset`` as received and already finished."""
        with self._lock:
            part = self._parts.setdefault(partition, _Partition())
            part.high = max(part.high, offset)

    def set_known_done(self, partition: int, offsets: Iterable[int]) -> None:
        """Record offsets of a newly assigned partition that need not run again."""
        with self._lock:
            part = self._parts.setdefault(partition, _Partition())
            part.known_done = set(offsets)

    def take_known_done(self, partition: int, offset: int) -> bool:
        """True (once) if ``offset`` was recorded as known done; it then counts as done."""
        with self._lock:
            part = self._parts.get(partition)
            if part is None or offset not in part.known_done:
                return False
            part.known_done.discard(offset)
            part.high = max(part.high, offset)
            return True

    def position(self, partition: int) -> int | None:
        with self._lock:
            part = self._parts.get(partition)
            return part.position() if part else None

    def take_changed(self, partitions: list[int] | None = None) -> dict[int, int]:
        """Positions that moved since last taken (of ``partitions``, default all)."""
        out: dict[int, int] = {}
        with self._lock:
            for p, part in self._parts.items():
                if partitions is not None and p not in partitions:
                    continue
                pos = part.position()
                if pos is not None and pos != part.reported:
                    out[p] = pos
                    part.reported = pos
        return out

    def forget(self, partitions: list[int]) -> None:
        """Drop revoked partitions; their late completions are then ignored."""
        with self._lock:
            for p in partitions:
                self._parts.pop(p, None)


class SeqMemory:
    """The highest task seq started per run, for the most recent ``capacity`` runs.

    A task whose seq is not above the remembered one is stale (re-delivered, or
    overtaken by a newer task) and is skipped. Forgetting an old run only means a
    stale task of it might run again, which at-least-once steps allow.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seqs: OrderedDict[str, int] = OrderedDict()

    def is_stale(self, run_id: str, seq: int) -> bool:
        """True if a task of the run with this seq or a later one was already started."""
        known = self._seqs.get(run_id)
        return known is not None and seq <= known

    def started(self, run_id: str, seq: int) -> None:
        """Remember that task ``seq`` of the run was started."""
        known = self._seqs.get(run_id)
        if known is None or seq > known:
            self._seqs[run_id] = seq
        self._seqs.move_to_end(run_id)
        while len(self._seqs) > self.capacity:
            self._seqs.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seqs)


def superseded(records: Iterable[tuple[int, bytes | None]]) -> set[int]:
    """Offsets of ``(offset, key)`` records (one partition, in order) whose key recurs later.

    Tasks are keyed by run id and the engine writes a run's next task only after it
    applied the previous one's report, and ignores reports of any task but the run's
    latest: a task followed by another of its run is finished or obsolete, and running
    it again would repeat a step whose outcome is already recorded. Keyless records
    are never superseded.
    """
    last: dict[bytes, int] = {}
    done: set[int] = set()
    for offset, key in records:
        if key is None:
            continue
        previous = last.get(key)
        if previous is not None:
            done.add(previous)
        last[key] = offset
    return done
