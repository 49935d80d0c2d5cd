"""Cron triggers: turn due ticks into runs, exactly once per tick.

Each function's cron schedule belongs to one ``runs`` partition, the one its partition
key ``cron/{fn_id}`` maps to; only the engine process that owns that partition fires
its ticks, and every cron run of the function lives there. The fold keeps the last
tick fired per (function, cron expression) in that partition's tables and ignores a
tick that is not newer, so a tick fired twice (by an old and a new owner during a
rebalance, or again after a crash) starts one run.

After downtime the service fires only the latest tick that was missed, once: a
schedule that should have run hourly during a 5-hour outage runs once on recovery,
not five times. A schedule that has never fired counts from its registration.

With ``TriggerCron(jitter=...)`` a tick is due a little after its time
(:func:`jitter_for`); the run still carries the scheduled tick, and the fold, which only
compares ticks, is unchanged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from engine.expressions import PreparedEvent
from engine.runtime.flowkeys import evaluate_flow
from engine.runtime.recovery import StateCorrupt, is_corruption, reason_of
from engine.runtime.router import Registry, request_for
from engine.store.partition import PartitionStore
from topics.catalog import Catalog, partition_for
from topics.cron import CronSchedule
from topics.ids import dedupe_key_for, derived_ulid
from topics.records import CRON_EVENT, RunRequested

log = logging.getLogger("stepstream.cron")

# A fired tick whose run has not reached the fold within this long is fired again
# (the fold ignores the second).
REFIRE_MS = 5000
# How soon to look again after firing: the fold records the tick within a batch or two.
RECHECK_MS = 100


def cron_partition_key(fn_id: str) -> str:
    return f"cron/{fn_id}"


def jitter_for(fn_id: str, schedule: CronSchedule, tick: int) -> int:
    """How long after ``tick`` its run starts: 0 without jitter, else a number in
    ``[0, schedule.jitter_ms]`` derived from the function, the expression and the tick
    alone, so every engine (an old and a new owner during a rebalance, a replay) picks
    the same one, and ticks of many functions on the same minute spread out."""
    if schedule.jitter_ms <= 0:
        return 0
    digest = hashlib.blake2b(f"{fn_id}\0{schedule.expr}\0{tick}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") % (schedule.jitter_ms + 1)


def latest_due_tick(fn_id: str, schedule: CronSchedule, now: int) -> int:
    """The latest tick whose (jittered) start is at or before ``now``; the caller knows
    one is due. Without jitter that is the latest tick; with it, the latest tick may still
    be waiting out its delay, and then the one before it is due, whatever its own delay:
    a delay never carries a tick past the next tick (TriggerCron documents that)."""
    tick = schedule.latest_at_or_before(now)
    if tick + jitter_for(fn_id, schedule, tick) <= now:
        return tick
    return schedule.latest_at_or_before(tick - 1)


class CronService:
    """Decides which ticks are due; the processor produces what it returns."""

    def __init__(self, catalog: Catalog, backoff_base_ms: int) -> None:
        self.catalog = catalog
        self.backoff_base_ms = backoff_base_ms
        # The earliest time anything may be due (None: nothing scheduled). The
        # processor's poll never waits past it.
        self.next_due: int | None = None
        self._checked_for: tuple[int, frozenset[int]] | None = None
        self._inflight: dict[tuple[str, str], tuple[int, int]] = {}

    def due(self, registry: Registry, stores: dict[int, PartitionStore],
            is_live: Callable[[int], bool], now: int) -> list[RunRequested]:
        """The run requests for ticks due at ``now`` on the partitions in ``stores``
        (those this process is assigned); ``is_live(p)`` says whether partition ``p``
        is restored, and is asked only for partitions holding a cron schedule."""
        key = (registry.version, frozenset(stores))
        if key == self._checked_for and (self.next_due is None or now < self.next_due):
            return []
        self._checked_for = key
        out: list[RunRequested] = []
        next_due: int | None = None
        for fn_id, fn in registry.functions.items():
            if not fn.crons:
                continue
            pkey = cron_partition_key(fn_id)
            p = partition_for(pkey, self.catalog.partitions)
            store = stores.get(p)
            if store is None:
                continue
            if not is_live(p):
                # Still restoring: its last ticks may not be folded yet. Look again soon.
                recheck = now + RECHECK_MS
                next_due = recheck if next_due is None else min(next_due, recheck)
                continue
            for schedule in fn.crons:
                try:
                    last = store.last_cron_tick(fn_id, schedule.expr)
                except Exception as exc:
                    if is_corruption(exc):  # the processor rebuilds the partition
                        raise StateCorrupt(store.path, reason_of(exc)) from exc
                    raise
                baseline = max(last if last is not None else -1, fn.definition.ts)
                first = schedule.next_after(baseline)
                first_due = first + jitter_for(fn_id, schedule, first)
                if first_due > now:
                    next_due = first_due if next_due is None else min(next_due, first_due)
                    continue
                tick = latest_due_tick(fn_id, schedule, now)
                sent = self._inflight.get((fn_id, schedule.expr))
                recheck = now + RECHECK_MS
                if sent is None or sent[0] != tick or now - sent[1] >= REFIRE_MS:
                    self._inflight[(fn_id, schedule.expr)] = (tick, now)
                    out.append(self._request(fn, schedule.expr, tick, pkey, now))
                    log.info("cron %s %r: tick %d fired", fn_id, schedule.expr, tick)
                next_due = recheck if next_due is None else min(next_due, recheck)
        self.next_due = next_due
        return out

    def _request(self, fn: Any, expr: str, tick: int, pkey: str, now: int) -> RunRequested:
        fn_id = fn.definition.fn_id
        event = {"name": CRON_EVENT, "data": {"cron": expr, "tick_ms": tick},
                 "id": derived_ulid(tick, "cron-event", fn_id, expr), "ts": tick}
        return request_for(fn, event, run_id=derived_ulid(tick, "cron", fn_id, expr),
                           dedupe_key=dedupe_key_for(fn_id, "cron", expr, str(tick)), now_ms=now,
                           backoff_base_ms=self.backoff_base_ms,
                           cron={"cron": expr, "tick_ms": tick}, partition_key=pkey,
                           flow=evaluate_flow(fn_id, fn.flow, PreparedEvent(event)))
