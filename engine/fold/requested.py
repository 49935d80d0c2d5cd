"""``run.requested``: a run begins — or not, when its dedupe key or cron tick was
seen already. Pure, like every module of :mod:`engine.fold`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from engine.fold import admission, batching, flow
from engine.fold.core import (
    Emit,
    Limits,
    Position,
    RunState,
    Tables,
    note,
    value_size,
)
from engine.fold.endings import hand_over
from engine.fold.timers import FINISH_DEADLINE, START_DEADLINE, arm_deadline
from engine.fold.waits import register_cancel_waits
from engine.store import keys
from topics.records import (
    DEDUPE_WINDOW_MS,
    RunRequested,
)


def on_run_requested(tables: Tables, rec: RunRequested, at: Position | None,
                     limits: Limits) -> list[Emit]:
    if tables.get_run(rec.run_id) is not None:
        return []  # the router re-delivered it; the run exists already
    event_id = str(rec.event.get("id", ""))
    options = rec.flow or {}
    home = options.get("home")
    forward = isinstance(home, str) and home != rec.partition_key
    if options.get("admitted"):
        # Forwarded home by the partition that holds its dedupe key or cron tick: those
        # were checked there.
        return _start(tables, rec, event_id, limits)
    if rec.cron is not None:
        key = keys.cron_key(rec.fn_id, str(rec.cron.get("cron")))
        tick = int(rec.cron.get("tick_ms") or 0)
        last = tables.get_value(key)
        if last is not None and last >= tick:
            return []  # this tick (or a later one) was fired already
        tables.put_value(key, tick)
    if rec.dedupe_key:
        held = tables.get_value(keys.dedupe_key(rec.dedupe_key))
        if held is not None and held["expires_ms"] > rec.ts:
            if forward and held["run_id"] == rec.run_id:
                # A copy of a request forwarded before: forward it again (home ignores
                # a run it has).
                return [_forwarded(rec, str(home))]
            return deduplicated(tables, rec, held["run_id"], event_id)
        tables.put_value(keys.dedupe_key(rec.dedupe_key),
                         {"run_id": rec.run_id, "expires_ms": rec.ts + DEDUPE_WINDOW_MS},
                         expires_ms=rec.ts + DEDUPE_WINDOW_MS)
    if forward:
        if event_id:
            tables.index_event(event_id, rec.run_id)
        return [_forwarded(rec, str(home))]
    return _start(tables, rec, event_id, limits)


def _start(tables: Tables, rec: RunRequested, event_id: str, limits: Limits) -> list[Emit]:
    """Begin the run, or put its event in a batch or a debounce that begins one later."""
    options = rec.flow or {}
    if options.get("batch"):
        return batching.add_to_batch(tables, rec, event_id, limits, begin_run)
    if options.get("debounce"):
        return batching.debounce(tables, rec, event_id)
    return _begin(tables, rec, event_id, limits)


def begin_run(tables: Tables, rec: RunRequested, event_id: str, limits: Limits,
              prepare: Callable[[RunState], None] | None = None) -> list[Emit]:
    """Begin a run a batch or a debounce closed (its events are indexed already), or a
    re-run (``prepare`` seeds its state before it is handed over: engine/fold/rerun.py)."""
    if tables.get_run(rec.run_id) is not None:
        return []
    return _begin(tables, rec, event_id, limits, prepare)


def _forwarded(rec: RunRequested, home: str) -> Emit:
    """The request, sent on to the run's home partition (flow control) once this
    partition admitted it."""
    return Emit("runs", home, replace(rec, partition_key=home,
                                      flow={**(rec.flow or {}), "admitted": True}))


def _begin(tables: Tables, rec: RunRequested, event_id: str, limits: Limits,
           prepare: Callable[[RunState], None] | None = None) -> list[Emit]:
    """Create the run's state and hand it to its first task."""
    state: RunState = {
        "run_id": rec.run_id,
        "fn_id": rec.fn_id,
        "app_id": rec.app_id,
        "partition_key": rec.partition_key,
        "event": rec.event,
        # The triggering event is not stored twice: ``events`` holds a batch only.
        "events": [] if rec.events == [rec.event] else rec.events,
        "status": "queued",
        "requested_at": rec.ts,
        "started_at": None,
        "ended_at": None,
        "output": None,
        "error": None,
        "retries": rec.retries,
        "backoff_base_ms": rec.backoff_base_ms,
        "attempt": 0,
        "task_seq": 0,
        "waiting": None,
        "step_order": [],
        "steps": {},
        "timeline": [{"at": rec.ts, "type": "run.requested",
                      "detail": {"event": rec.event.get("name"), "event_id": event_id}}],
        "dedupe_key": rec.dedupe_key,
        "parent": rec.parent,
        "cancel": rec.cancel,
        "timeouts": rec.timeouts,
        "cron": rec.cron,
        "lifecycle_events": rec.lifecycle_events,
        "deadlines": {},
        "cancel_waits": [],
        "cancelled_by": None,
        "limits": limits.to_state(),
        # Bytes of events and outputs held, against limits["state_bytes"].
        "state_bytes": value_size(rec.event) + (
            value_size(rec.events) if rec.events != [rec.event] else 0),
    }
    if rec.flow:
        # Only with flow control: a run without it keeps the state it always had.
        state["flow"] = rec.flow
        state["slots"] = []
    if event_id:
        tables.index_event(event_id, rec.run_id)
    if prepare is not None:
        prepare(state)
    emits = register_cancel_waits(state, rec.ts)
    timeouts = rec.timeouts or {}
    if isinstance(timeouts.get("start_ms"), int):
        arm_deadline(tables, state, START_DEADLINE, rec.ts + timeouts["start_ms"])
    elif isinstance(timeouts.get("finish_ms"), int):
        # Without a start timeout the run starts as it is handed to workers, now.
        arm_deadline(tables, state, FINISH_DEADLINE, rec.ts + timeouts["finish_ms"])
    if rec.flow:
        emits.extend(admission.admit(
            tables, state, rec.ts,
            lambda t, run_id, now: flow.settle(t, run_id, now, hand_over)))
    else:
        emits.extend(hand_over(tables, state, rec.ts))
    tables.put_run(rec.run_id, state)
    return emits


def deduplicated(tables: Tables, rec: RunRequested, holder: str, event_id: str
                  ) -> list[Emit]:
    """A second run for a held dedupe key: no run; the event points at the holder."""
    if event_id:
        tables.index_event(event_id, holder)
    state = tables.get_run(holder)
    if state is not None:
        note(state, rec.ts, "run.deduplicated",
             detail={"event_id": event_id, "dedupe_key": rec.dedupe_key,
                     "skipped_run_id": rec.run_id})
        tables.put_run(holder, state)
    return []
