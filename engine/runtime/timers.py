"""The timer service: fire due timers of the ``runs`` partitions this process owns.

Timers live in each partition's table (``t/`` keys, by due time). A due timer is
produced as ``timer.fired`` onto the run's own partition and stays in the table until
the fold applies that record and deletes it; one not back within
:data:`TIMER_REFIRE_MS` is fired again (the first may have been lost with a crashed
producer), and the fold ignores a repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from engine.store import keys
from engine.store.partition import PartitionStore
from engine.store.view import BatchView
from topics.codec import encode
from topics.records import TimerFired

TIMER_REFIRE_MS = 5000
# Fired timers are looked at again this soon, until their record comes back.
RECHECK_MS = 50


class Produce(Protocol):
    def __call__(self, topic: str, value: bytes, key: str, *, partition: int) -> None: ...


class TimerService:
    """When each owned partition's next timer is due, and which fired timers are in
    flight."""

    def __init__(self, runs_topic: str) -> None:
        self.runs_topic = runs_topic
        self.next_due: dict[int, int | None] = {}
        self.inflight: dict[tuple[int, str, str], int] = {}

    def assigned(self, p: int, store: PartitionStore) -> None:
        self.next_due[p] = store.next_due()

    def forget(self, p: int) -> None:
        """The partition was revoked or is being rebuilt: its timers are not ours now."""
        self.next_due.pop(p, None)
        self.inflight = {k: v for k, v in self.inflight.items() if k[0] != p}

    def earliest(self) -> int | None:
        dues = [d for d in self.next_due.values() if d is not None]
        return min(dues) if dues else None

    def committed(self, p: int, view: BatchView) -> None:
        """A batch of partition ``p`` was written: new timers may be due sooner, and
        deleted ones were applied (no longer in flight)."""
        if view.new_timers:
            due = min(view.new_timers)
            current = self.next_due.get(p)
            self.next_due[p] = due if current is None else min(current, due)
        for key in view.deletes:
            if keys.is_timer_key(key):
                _due, run_id, timer_id = keys.parse_timer_key(key)
                self.inflight.pop((p, run_id, timer_id), None)

    def fire(self, stores: Mapping[int, PartitionStore], now: int, produce: Produce) -> bool:
        """Produce every timer due at ``now`` not already in flight; whether any was."""
        fired = False
        for p, store in list(stores.items()):
            due_at = self.next_due.get(p)
            if due_at is None or due_at > now:
                continue
            waiting_inflight = fired_here = False
            for due, run_id, timer_id in store.due_timers(now):
                key = (p, run_id, timer_id)
                sent = self.inflight.get(key)
                if sent is not None and now - sent < TIMER_REFIRE_MS:
                    waiting_inflight = True
                    continue
                # Read only: the fold's cached state, not a fresh unpack per timer.
                state = store.cached_run(run_id)
                pkey = state["partition_key"] if state else run_id
                rec = TimerFired(run_id=run_id, timer_id=timer_id, due_ms=due, ts=now)
                produce(self.runs_topic, encode(rec), pkey, partition=p)
                self.inflight[key] = now
                fired = fired_here = True
            # Fired timers stay in the table until their TimerFired is applied: look at
            # them again a little later, and at the next not-yet-due timer on time.
            upcoming = store.next_due(after=now)
            if waiting_inflight or fired_here:
                upcoming = (now + RECHECK_MS if upcoming is None
                            else min(upcoming, now + RECHECK_MS))
            self.next_due[p] = upcoming
        return fired
