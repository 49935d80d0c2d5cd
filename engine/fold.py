"""The run fold: ``(state, record) -> (state', records to emit)``.

Pure and deterministic: no I/O, no clock (time comes from the records), no randomness
(timer ids and retry jitter derive from the run id and its position). The processor
gives it a :class:`Tables` view of one partition's state and produces what it returns;
replaying the same records into empty tables gives byte-identical state.

Every record is applied at most once in effect: a duplicate ``RunRequested`` finds
the run already there, a stale or repeated ``OutcomesReported`` carries a task
sequence the run is no longer waiting on, and a repeated ``TimerFired`` names a timer
the run no longer waits for.
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine import fold_ends as ends
from engine.fold_core import (
    TERMINAL,
    Emit,
    Limits,
    NotApplicable,
    Position,
    RunState,
    Tables,
    error_brief,
    keep_value,
    note,
    over_state_limit,
    value_size,
)
from topics.records import (
    DEDUPE_WINDOW_MS,
    FUNCTION_COMPLETED,
    FUNCTION_FAILED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_INVOKE,
    STEP_SLEEP,
    STEP_WAIT,
    CancelRequested,
    InvokeFinished,
    Outcome,
    OutcomesReported,
    Record,
    RunRequested,
    RunStarted,
    TimerFired,
    WaitResolved,
)

__all__ = ["TERMINAL", "Emit", "Limits", "NotApplicable", "Position", "RunState", "Tables",
           "apply", "backoff_ms"]

# A retry never waits longer than this, however many attempts came before.
MAX_BACKOFF_MS = 3_600_000
STEP_OPS = (STEP_COMPLETED, STEP_FAILED, STEP_SLEEP, STEP_WAIT, STEP_INVOKE)
PAUSING_OPS = (STEP_WAIT, STEP_INVOKE)
DEFAULT_LIMITS = Limits()


def dedupe_table_key(dedupe_key: str) -> bytes:
    return b"i/" + dedupe_key.encode()


def cron_table_key(fn_id: str, cron: str) -> bytes:
    return b"c/" + f"{fn_id}\x1f{cron}".encode()


def apply(tables: Tables, record: Record, at: Position | None = None,
          limits: Limits = DEFAULT_LIMITS) -> list[Emit]:
    """Apply one ``runs`` record; return the records to emit.

    ``at`` is the record's place on the topic: with it, a task can refer to a large
    value this record holds instead of carrying it (without it, values go inline).
    ``limits`` apply to runs this record requests; a run keeps the ones it began with.
    """
    # Dedupe keys past their window go first, at this record's time: what expires
    # depends only on the records, never on how they were batched.
    tables.expire(record.ts)
    if isinstance(record, RunRequested):
        return _requested(tables, record, limits)
    if isinstance(record, OutcomesReported):
        return _reported(tables, record, at)
    if isinstance(record, TimerFired):
        return _timer_fired(tables, record)
    if isinstance(record, WaitResolved):
        return ends.wait_resolved(tables, record, at)
    if isinstance(record, InvokeFinished):
        return ends.invoke_finished(tables, record, at)
    if isinstance(record, CancelRequested):
        return ends.cancel_requested(tables, record)
    if isinstance(record, RunStarted):
        return ends.run_started(tables, record)
    raise NotApplicable(f"record kind {record.KIND!r} does not belong on the runs topic")


def backoff_ms(base_ms: int, attempt: int, run_id: str, step_id: str) -> int:
    """Delay before retry number ``attempt + 1``: exponential with deterministic jitter.

    ``base * 2**attempt`` scaled into [0.5, 1.0) by a hash of the run and step, so many
    runs failing together do not retry together, yet replay computes the same delay.
    """
    exp = min(base_ms * (2 ** min(attempt, 32)), MAX_BACKOFF_MS)
    digest = hashlib.blake2b(f"{run_id}\x1f{step_id}\x1f{attempt}".encode(),
                             digest_size=2).digest()
    jitter = int.from_bytes(digest, "big") / 65536.0
    return max(1, int(exp * (0.5 + 0.5 * jitter)))


# --- run.requested ---------------------------------------------------------------


def _requested(tables: Tables, rec: RunRequested, limits: Limits) -> list[Emit]:
    if tables.get_run(rec.run_id) is not None:
        return []  # the router re-delivered it; the run exists already
    event_id = str(rec.event.get("id", ""))
    if rec.cron is not None:
        key = cron_table_key(rec.fn_id, str(rec.cron.get("cron")))
        tick = int(rec.cron.get("tick_ms") or 0)
        last = tables.get_value(key)
        if last is not None and last >= tick:
            return []  # this tick (or a later one) was fired already
        tables.put_value(key, tick)
    if rec.dedupe_key:
        held = tables.get_value(dedupe_table_key(rec.dedupe_key))
        if held is not None and held["expires_ms"] > rec.ts:
            return _deduplicated(tables, rec, held["run_id"], event_id)
        tables.put_value(dedupe_table_key(rec.dedupe_key),
                         {"run_id": rec.run_id, "expires_ms": rec.ts + DEDUPE_WINDOW_MS},
                         expires_ms=rec.ts + DEDUPE_WINDOW_MS)
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
    if event_id:
        tables.index_event(event_id, rec.run_id)
    emits = ends.register_cancel_waits(state, rec.ts)
    timeouts = rec.timeouts or {}
    if isinstance(timeouts.get("start_ms"), int):
        ends.arm_deadline(tables, state, ends.START_DEADLINE, rec.ts + timeouts["start_ms"])
    elif isinstance(timeouts.get("finish_ms"), int):
        # Without a start timeout the run starts as it is handed to workers, now.
        ends.arm_deadline(tables, state, ends.FINISH_DEADLINE, rec.ts + timeouts["finish_ms"])
    emits.extend(ends.hand_over(tables, state, rec.ts))
    tables.put_run(rec.run_id, state)
    return emits


def _deduplicated(tables: Tables, rec: RunRequested, holder: str, event_id: str
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


# --- outcomes.reported -----------------------------------------------------------


def _reported(tables: Tables, rec: OutcomesReported, at: Position | None) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None:
        raise NotApplicable(f"outcomes for unknown run {rec.run_id}")
    if not rec.outcomes:
        raise NotApplicable(f"outcomes.reported for run {rec.run_id} carries no outcome")
    validate_outcomes(rec)
    waiting = state["waiting"]
    if state["status"] == "cancelled" and rec.task_seq == state["task_seq"] and not any(
            e["type"] == "outcome.ignored" for e in state["timeline"][-3:]):
        # The step that was executing when the run was cancelled finished; say so, once.
        note(state, rec.ts, "outcome.ignored",
             detail={"task_seq": rec.task_seq, "reason": "the run was cancelled",
                     "steps": [o.step_id for o in rec.outcomes if o.step_id]})
        tables.put_run(rec.run_id, state)
        return []
    if (state["status"] in TERMINAL or waiting is None or waiting["kind"] != "task"
            or waiting["seq"] != rec.task_seq):
        return []  # a stale task's report, or one already applied

    if ends.START_DEADLINE in (state.get("deadlines") or {}):
        # The worker's run.started was lost or is late; a report proves the start.
        ends.mark_started(tables, state, rec.ts, rec.worker)
    timers: list[tuple[int, str, str | None]] = []  # (due, reason, step_id)
    pauses = [o for o in rec.outcomes if o.op in PAUSING_OPS]
    emits: list[Emit] = []
    for index, outcome in enumerate(rec.outcomes):
        if state["status"] in TERMINAL:
            break
        if outcome.op in PAUSING_OPS:
            continue  # after the others, below
        if outcome.op in (STEP_COMPLETED, STEP_FAILED, STEP_SLEEP):
            timer = _apply_step_outcome(state, outcome, rec, at.ref(index) if at else None)
            if timer is not None:
                timers.append(timer)
            elif state["status"] == "failed":
                emits.extend(ends.finish(tables, state, rec.ts))  # over the state limit
        elif outcome.op == FUNCTION_COMPLETED:
            error = over_state_limit(state, value_size(outcome.output), "the function's output")
            if error is not None:
                emits.extend(ends.fail(tables, state, error, rec.ts))
                continue
            state["status"] = "completed"
            state["output"] = outcome.output
            state["ended_at"] = rec.ts
            note(state, rec.ts, "run.completed")
            emits.extend(ends.finish(tables, state, rec.ts))
        elif outcome.op == FUNCTION_FAILED:
            timer = _apply_function_failed(state, outcome, rec)
            if timer is not None:
                timers.append(timer)
            elif state["status"] == "failed":
                emits.extend(ends.finish(tables, state, rec.ts))
        else:
            # Unknown ops are rejected by validation below before anything is applied.
            raise AssertionError(outcome.op)

    if state["status"] in TERMINAL:
        state["waiting"] = None
    elif pauses and (len(pauses) > 1 or timers):
        # A run waits on one thing at a time; the SDK never reports this.
        state["status"] = "failed"
        state["error"] = {"name": "UnsupportedParallelWait",
                          "message": "wait_for_event and invoke must be the only new step "
                                     "of an execution (not inside step.parallel)",
                          "stack": ""}
        state["ended_at"] = rec.ts
        note(state, rec.ts, "run.failed", detail=error_brief(state["error"]))
        emits.extend(ends.finish(tables, state, rec.ts))
    elif pauses:
        o = pauses[0]
        step = _step(state, o)
        if step["status"] in ("completed", "failed"):
            emits.extend(ends.hand_over(tables, state, rec.ts))
        elif o.op == STEP_WAIT:
            emits.extend(ends.begin_wait(tables, state, step, o, rec))
        else:
            emits.extend(ends.begin_invoke(tables, state, step, o, rec))
    elif timers:
        # One wait per run: wake when every requested time has come. A retry may start
        # later than its backoff, never earlier; a sleep never wakes early.
        due = max(t[0] for t in timers)
        reason = "sleep" if any(t[1] == "sleep" for t in timers) else "retry"
        step_ids = [t[2] for t in timers if t[2] is not None]
        timer_id = f"{reason}:{state['task_seq']}"
        state["waiting"] = {"kind": "timer", "timer_id": timer_id, "due_ms": due,
                            "reason": reason, "step_id": step_ids[0] if step_ids else None}
        tables.put_timer(due, rec.run_id, timer_id)
    else:
        emits.extend(ends.hand_over(tables, state, rec.ts))
    tables.put_run(rec.run_id, state)
    return emits


def validate_outcomes(rec: OutcomesReported) -> None:
    """Reject a report whose outcomes are malformed, before anything is applied."""
    for o in rec.outcomes:
        if o.op not in (*STEP_OPS, FUNCTION_COMPLETED, FUNCTION_FAILED):
            raise NotApplicable(f"unknown outcome op {o.op!r}")
        if o.op in STEP_OPS and not o.step_id:
            raise NotApplicable(f"outcome {o.op} has no step_id")
        if o.op in (STEP_SLEEP, STEP_WAIT) and not isinstance(o.until_ms, int):
            raise NotApplicable(f"{o.op} outcome has no until_ms")
        if o.op == STEP_WAIT and not (isinstance(o.wait, dict)
                                      and isinstance(o.wait.get("event"), str)
                                      and o.wait["event"]):
            raise NotApplicable("step.wait outcome names no event")
        if o.op == STEP_INVOKE and not (isinstance(o.invoke, dict)
                                        and isinstance(o.invoke.get("function_id"), str)
                                        and o.invoke["function_id"]):
            raise NotApplicable("step.invoke outcome names no function")
        if o.op == STEP_INVOKE and o.until_ms is not None and not isinstance(o.until_ms, int):
            raise NotApplicable("step.invoke until_ms must be an integer")


def _step(state: RunState, outcome: Outcome) -> dict[str, Any]:
    step_id = outcome.step_id
    assert step_id is not None
    step = state["steps"].get(step_id)
    if step is None:
        step = {"name": outcome.name or step_id, "status": "running", "output": None,
                "error": None, "until_ms": None, "attempts": []}
        state["steps"][step_id] = step
        state["step_order"].append(step_id)
    return step


def _apply_step_outcome(state: RunState, o: Outcome, rec: OutcomesReported,
                        ref: list[int] | None) -> tuple[int, str, str | None] | None:
    """Record one step outcome; a retry or sleep returns its timer. A completed step
    whose output would take the run over its state limit fails the run instead."""
    step = _step(state, o)
    step_id = o.step_id
    if step["status"] in ("completed", "failed"):
        return None  # recorded once; a second report of the same step changes nothing
    if o.op == STEP_SLEEP:
        until = int(o.until_ms or 0)
        step["status"] = "sleeping"
        step["until_ms"] = until
        note(state, rec.ts, "sleep.scheduled", step_id, detail={"until_ms": until})
        return (until, "sleep", step_id)
    attempt = len(step["attempts"])
    size = value_size(o.output if o.op == STEP_COMPLETED else o.error)
    too_large = (over_state_limit(state, size, f"step {step_id!r} output")
                 if o.op == STEP_COMPLETED else None)
    error = too_large or (o.error if o.op == STEP_FAILED else None)
    step["attempts"].append({"attempt": attempt, "started_at": o.started_at,
                             "ended_at": o.ended_at if o.ended_at is not None else rec.ts,
                             "error": error})
    if too_large is not None:
        # Not retriable: the same step would produce the same output again.
        step["status"] = "failed"
        step["error"] = too_large
        keep_value(step, value_size(too_large), None)
        note(state, rec.ts, "step.failed", step_id, attempt, detail=error_brief(too_large))
        state["status"] = "failed"
        state["error"] = too_large
        state["ended_at"] = rec.ts
        note(state, rec.ts, "run.failed", attempt=state["attempt"],
             detail=error_brief(too_large))
        return None
    if o.op == STEP_COMPLETED:
        step["status"] = "completed"
        step["output"] = o.output
        step["error"] = None
        keep_value(step, size, ref)
        note(state, rec.ts, "step.completed", step_id, attempt)
        return None
    step["error"] = o.error
    note(state, rec.ts, "step.failed", step_id, attempt, detail=error_brief(o.error))
    if o.retriable and attempt < state["retries"]:
        due = _retry_due(state, o, rec.ts, attempt, step_id or "")
        step["status"] = "retrying"
        note(state, rec.ts, "step.retry_scheduled", step_id, attempt + 1,
              detail={"due_ms": due})
        return (due, "retry", step_id)
    step["status"] = "failed"
    keep_value(step, size, ref)
    note(state, rec.ts, "step.errored", step_id, attempt,
          detail="not retriable" if not o.retriable else "retries exhausted")
    return None


def _apply_function_failed(state: RunState, o: Outcome, rec: OutcomesReported
                           ) -> tuple[int, str, str | None] | None:
    attempt = state["attempt"]
    if o.retriable and attempt < state["retries"]:
        due = _retry_due(state, o, rec.ts, attempt, "")
        state["attempt"] = attempt + 1
        state["error"] = o.error
        note(state, rec.ts, "function.retry_scheduled", attempt=attempt + 1,
              detail={"due_ms": due, **error_brief(o.error)})
        return (due, "retry", None)
    state["status"] = "failed"
    state["error"] = o.error
    state["ended_at"] = rec.ts
    note(state, rec.ts, "run.failed", attempt=attempt, detail=error_brief(o.error))
    return None


def _retry_due(state: RunState, o: Outcome, now: int, attempt: int, step_id: str) -> int:
    if o.retry_after_ms is not None:
        return max(now, int(o.retry_after_ms))
    return now + backoff_ms(state["backoff_base_ms"], attempt, state["run_id"], step_id)


# --- timer.fired -----------------------------------------------------------------


def _timer_fired(tables: Tables, rec: TimerFired) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None:
        raise NotApplicable(f"timer for unknown run {rec.run_id}")
    if state["status"] in TERMINAL:
        return []
    deadlines = state.get("deadlines") or {}
    if rec.timer_id in deadlines:
        if rec.ts < deadlines[rec.timer_id]:
            return []  # never early (a clock behind); it fires again when due
        emits = ends.deadline_passed(tables, state, rec.timer_id, rec.ts)
        tables.put_run(rec.run_id, state)
        return emits
    waiting = state["waiting"]
    if (waiting is None or waiting.get("timer_id") != rec.timer_id
            or waiting["kind"] == "task"):
        return []  # fired before, or the run moved on
    if rec.ts < waiting["due_ms"]:
        # Written by a process whose clock is behind: never wake early. The timer stays
        # in the table and the timer service fires it again when it is due.
        return []
    if waiting["kind"] == "event":
        emits = ends.wait_timed_out(tables, state, rec.ts)
        tables.put_run(rec.run_id, state)
        return emits
    if waiting["kind"] == "invoke":
        emits = ends.invoke_timed_out(tables, state, rec.ts)
        tables.put_run(rec.run_id, state)
        return emits
    tables.delete_timer(waiting["due_ms"], rec.run_id, rec.timer_id)
    note(state, rec.ts, "timer.fired", waiting.get("step_id"),
         detail={"timer_id": rec.timer_id, "due_ms": waiting["due_ms"],
                 "late_ms": rec.ts - waiting["due_ms"]})
    for step in state["steps"].values():
        if step["status"] == "sleeping" and step["until_ms"] <= rec.ts:
            step["status"] = "completed"
            step["output"] = None
            step["attempts"].append({"attempt": 0, "started_at": None, "ended_at": rec.ts,
                                     "error": None})
    emits = ends.hand_over(tables, state, rec.ts)
    tables.put_run(rec.run_id, state)
    return emits
