"""The pure folds: ``(tables, record) -> records to emit``, one handler per record kind.

The run fold (``runs`` topic) and the matcher's fold (``waits`` topic) are pure and
deterministic: no I/O, no clock (time comes from the records), no randomness (timer
ids and retry jitter derive from the run id and its position). The batch layer
(:mod:`engine.runtime.batch`) gives them a view of one partition's tables and produces
what they return; replaying the same records into empty tables gives byte-identical
state.

Every record is applied at most once in effect: a duplicate ``run.requested`` finds
the run already there, a stale or repeated ``outcomes.reported`` carries a task
sequence the run is no longer waiting on, and a repeated ``timer.fired`` names a timer
the run no longer waits for.

The tables below are the one list of record kinds each topic's fold takes (the batch
layer decodes with their keys); docs/architecture.md maps each to its module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.fold import flow
from engine.fold.cancel import on_run_cancel
from engine.fold.core import Emit, Limits, NotApplicable, Position, RunState, Tables
from engine.fold.endings import hand_over
from engine.fold.invokes import on_invoke_finished
from engine.fold.matcher import WaitTables, on_event, on_wait_cleared, on_wait_registered
from engine.fold.outcomes import backoff_ms, on_outcomes_reported
from engine.fold.requested import on_run_requested
from engine.fold.rerun import on_run_rerun_linked, on_run_rerun_requested
from engine.fold.timers import on_run_started, on_timer_fired
from engine.fold.waits import on_wait_resolved
from engine.runstate import TERMINAL
from topics.records import (
    CancelRequested,
    Event,
    InvokeFinished,
    OutcomesReported,
    Record,
    RerunLinked,
    RerunRunRequested,
    RunRequested,
    RunStarted,
    TimerFired,
    WaitCleared,
    WaitRegistered,
    WaitResolved,
)

__all__ = ["RUNS_HANDLERS", "TERMINAL", "WAITS_HANDLERS", "Emit", "Limits", "NotApplicable",
           "Position", "RunState", "Tables", "apply", "apply_waits", "backoff_ms"]

RunHandler = Callable[[Tables, Any, Position | None, Limits], list[Emit]]
WaitHandler = Callable[[WaitTables, Any, int | None], list[Emit]]

# The run fold: the kinds the ``runs`` topic carries.
RUNS_HANDLERS: dict[type[Record], RunHandler] = {
    RunRequested: on_run_requested,          # requested.py
    OutcomesReported: on_outcomes_reported,  # outcomes.py
    TimerFired: on_timer_fired,              # timers.py
    RunStarted: on_run_started,              # timers.py (start/finish deadlines)
    WaitResolved: on_wait_resolved,          # waits.py
    InvokeFinished: on_invoke_finished,      # invokes.py
    CancelRequested: on_run_cancel,          # cancel.py
    RerunRunRequested: on_run_rerun_requested,   # rerun.py
    RerunLinked: on_run_rerun_linked,            # rerun.py
}

# The matcher's fold: the kinds the ``waits`` topic carries.
WAITS_HANDLERS: dict[type[Record], WaitHandler] = {
    WaitRegistered: on_wait_registered,      # matcher.py
    WaitCleared: on_wait_cleared,            # matcher.py
    Event: on_event,                         # matcher.py
}

DEFAULT_LIMITS = Limits()


def apply(tables: Tables, record: Record, at: Position | None = None,
          limits: Limits = DEFAULT_LIMITS) -> list[Emit]:
    """Apply one ``runs`` record; return the records to emit.

    ``at`` is the record's place on the topic: with it, a task can refer to a large
    value this record holds instead of carrying it (without it, values go inline).
    ``limits`` apply to runs this record requests; a run keeps the ones it began with.
    """
    handler = RUNS_HANDLERS.get(type(record))
    if handler is None:
        raise NotApplicable(f"record kind {record.KIND!r} does not belong on the runs topic")
    # Dedupe keys past their window go first, at this record's time: what expires
    # depends only on the records, never on how they were batched.
    tables.expire(record.ts)
    emits = handler(tables, record, at, limits)
    run_id = getattr(record, "run_id", None)
    if run_id is not None:
        # Slots the run no longer needs go back, to the runs queued for them.
        emits.extend(flow.settle(tables, run_id, record.ts, hand_over))
    return emits


def apply_waits(tables: WaitTables, record: Record, appended_ms: int | None = None
                ) -> list[Emit]:
    """Apply one ``waits`` record; return the ``wait.resolved`` records to emit.

    ``appended_ms`` is the record's time in the ``waits`` log (the Kafka timestamp the
    engine's producer gave it when forwarding). An event resolves only waits whose
    expiry is after that time; None (unknown) checks no expiry.
    """
    handler = WAITS_HANDLERS.get(type(record))
    if handler is None:
        raise NotApplicable(f"record kind {record.KIND!r} does not belong on the waits topic")
    return handler(tables, record, appended_ms)
