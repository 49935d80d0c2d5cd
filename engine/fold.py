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
from dataclasses import dataclass
from typing import Any, Protocol

from topics.records import (
    FUNCTION_COMPLETED,
    FUNCTION_FAILED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_SLEEP,
    Outcome,
    OutcomesReported,
    Record,
    RunRequested,
    Task,
    TimerFired,
)

RunState = dict[str, Any]

TERMINAL = frozenset({"completed", "failed", "cancelled"})
# A retry never waits longer than this, however many attempts came before.
MAX_BACKOFF_MS = 3_600_000


class Tables(Protocol):
    """The part of one partition's tables the fold reads and writes."""

    def get_run(self, run_id: str) -> RunState | None: ...
    def put_run(self, run_id: str, state: RunState) -> None: ...
    def put_timer(self, due_ms: int, run_id: str, timer_id: str) -> None: ...
    def delete_timer(self, due_ms: int, run_id: str, timer_id: str) -> None: ...
    def index_event(self, event_id: str, run_id: str) -> None: ...


class NotApplicable(ValueError):
    """A well-formed record that cannot apply to any state (it goes to the dead-letter
    topic); the tables are left untouched."""


@dataclass(slots=True)
class Emit:
    """A record the fold asks the processor to produce: ``topic`` is a logical name
    (``"tasks"``), resolved to the real topic name by the processor."""

    topic: str
    key: str
    record: Record


def apply(tables: Tables, record: Record) -> list[Emit]:
    """Apply one ``runs`` record; return the records to emit."""
    if isinstance(record, RunRequested):
        return _requested(tables, record)
    if isinstance(record, OutcomesReported):
        return _reported(tables, record)
    if isinstance(record, TimerFired):
        return _timer_fired(tables, record)
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


def _requested(tables: Tables, rec: RunRequested) -> list[Emit]:
    if tables.get_run(rec.run_id) is not None:
        return []  # the router re-delivered it; the run exists already
    event_id = str(rec.event.get("id", ""))
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
    }
    if event_id:
        tables.index_event(event_id, rec.run_id)
    emits = [_dispatch(state, rec.ts)]
    tables.put_run(rec.run_id, state)
    return emits


# --- outcomes.reported -----------------------------------------------------------


def _reported(tables: Tables, rec: OutcomesReported) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None:
        raise NotApplicable(f"outcomes for unknown run {rec.run_id}")
    if not rec.outcomes:
        raise NotApplicable(f"outcomes.reported for run {rec.run_id} carries no outcome")
    validate_outcomes(rec)
    waiting = state["waiting"]
    if (state["status"] in TERMINAL or waiting is None or waiting["kind"] != "task"
            or waiting["seq"] != rec.task_seq):
        return []  # a stale task's report, or one already applied

    timers: list[tuple[int, str, str | None]] = []  # (due, reason, step_id)
    for outcome in rec.outcomes:
        if state["status"] in TERMINAL:
            break
        if outcome.op in (STEP_COMPLETED, STEP_FAILED, STEP_SLEEP):
            timer = _apply_step_outcome(state, outcome, rec)
            if timer is not None:
                timers.append(timer)
        elif outcome.op == FUNCTION_COMPLETED:
            state["status"] = "completed"
            state["output"] = outcome.output
            state["ended_at"] = rec.ts
            _note(state, rec.ts, "run.completed")
        elif outcome.op == FUNCTION_FAILED:
            timer = _apply_function_failed(state, outcome, rec)
            if timer is not None:
                timers.append(timer)
        else:
            # Unknown ops are rejected by validation below before anything is applied.
            raise AssertionError(outcome.op)

    emits: list[Emit] = []
    if state["status"] in TERMINAL:
        state["waiting"] = None
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
        emits.append(_dispatch(state, rec.ts))
    tables.put_run(rec.run_id, state)
    return emits


def validate_outcomes(rec: OutcomesReported) -> None:
    """Reject a report whose outcomes are malformed, before anything is applied."""
    for o in rec.outcomes:
        if o.op not in (STEP_COMPLETED, STEP_FAILED, STEP_SLEEP, FUNCTION_COMPLETED,
                        FUNCTION_FAILED):
            raise NotApplicable(f"unknown outcome op {o.op!r}")
        if o.op in (STEP_COMPLETED, STEP_FAILED, STEP_SLEEP) and not o.step_id:
            raise NotApplicable(f"outcome {o.op} has no step_id")
        if o.op == STEP_SLEEP and not isinstance(o.until_ms, int):
            raise NotApplicable("step.sleep outcome has no until_ms")


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


def _apply_step_outcome(state: RunState, o: Outcome, rec: OutcomesReported
                        ) -> tuple[int, str, str | None] | None:
    step = _step(state, o)
    step_id = o.step_id
    if step["status"] in ("completed", "failed"):
        return None  # recorded once; a second report of the same step changes nothing
    if o.op == STEP_SLEEP:
        until = int(o.until_ms or 0)
        step["status"] = "sleeping"
        step["until_ms"] = until
        _note(state, rec.ts, "sleep.scheduled", step_id, detail={"until_ms": until})
        return (until, "sleep", step_id)
    attempt = len(step["attempts"])
    step["attempts"].append({"attempt": attempt, "started_at": o.started_at,
                             "ended_at": o.ended_at if o.ended_at is not None else rec.ts,
                             "error": o.error if o.op == STEP_FAILED else None})
    if o.op == STEP_COMPLETED:
        step["status"] = "completed"
        step["output"] = o.output
        step["error"] = None
        _note(state, rec.ts, "step.completed", step_id, attempt)
        return None
    step["error"] = o.error
    _note(state, rec.ts, "step.failed", step_id, attempt, detail=_error_brief(o.error))
    if o.retriable and attempt < state["retries"]:
        due = _retry_due(state, o, rec.ts, attempt, step_id or "")
        step["status"] = "retrying"
        _note(state, rec.ts, "step.retry_scheduled", step_id, attempt + 1,
              detail={"due_ms": due})
        return (due, "retry", step_id)
    step["status"] = "failed"
    _note(state, rec.ts, "step.errored", step_id, attempt,
          detail="not retriable" if not o.retriable else "retries exhausted")
    return None


def _apply_function_failed(state: RunState, o: Outcome, rec: OutcomesReported
                           ) -> tuple[int, str, str | None] | None:
    attempt = state["attempt"]
    if o.retriable and attempt < state["retries"]:
        due = _retry_due(state, o, rec.ts, attempt, "")
        state["attempt"] = attempt + 1
        state["error"] = o.error
        _note(state, rec.ts, "function.retry_scheduled", attempt=attempt + 1,
              detail={"due_ms": due, **_error_brief(o.error)})
        return (due, "retry", None)
    state["status"] = "failed"
    state["error"] = o.error
    state["ended_at"] = rec.ts
    _note(state, rec.ts, "run.failed", attempt=attempt, detail=_error_brief(o.error))
    return None


def _retry_due(state: RunState, o: Outcome, now: int, attempt: int, step_id: str) -> int:
    if o.retry_after_ms is not None:
        return max(now, int(o.retry_after_ms))
    return now + backoff_ms(state["backoff_base_ms"], attempt, state["run_id"], step_id)


def _error_brief(error: dict[str, Any] | None) -> dict[str, Any]:
    if not error:
        return {}
    return {"error": f"{error.get('name', 'Error')}: {error.get('message', '')}"}


# --- timer.fired -----------------------------------------------------------------


def _timer_fired(tables: Tables, rec: TimerFired) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None:
        raise NotApplicable(f"timer for unknown run {rec.run_id}")
    waiting = state["waiting"]
    if (state["status"] in TERMINAL or waiting is None or waiting["kind"] != "timer"
            or waiting["timer_id"] != rec.timer_id):
        return []  # fired before, or the run moved on
    if rec.ts < waiting["due_ms"]:
        # Written by a process whose clock is behind: never wake early. The timer stays
        # in the table and the timer service fires it again when it is due.
        return []
    tables.delete_timer(waiting["due_ms"], rec.run_id, rec.timer_id)
    _note(state, rec.ts, "timer.fired", waiting.get("step_id"),
          detail={"timer_id": rec.timer_id, "due_ms": waiting["due_ms"],
                  "late_ms": rec.ts - waiting["due_ms"]})
    for step in state["steps"].values():
        if step["status"] == "sleeping" and step["until_ms"] <= rec.ts:
            step["status"] = "completed"
            step["output"] = None
            step["attempts"].append({"attempt": 0, "started_at": None, "ended_at": rec.ts,
                                     "error": None})
    emits = [_dispatch(state, rec.ts)]
    tables.put_run(rec.run_id, state)
    return emits


# --- dispatch --------------------------------------------------------------------


def _dispatch(state: RunState, now: int) -> Emit:
    """Hand the run to a worker: a new task carrying every memoized outcome."""
    seq = state["task_seq"] + 1
    state["task_seq"] = seq
    state["waiting"] = {"kind": "task", "seq": seq}
    if state["status"] == "queued":
        state["status"] = "running"
        state["started_at"] = now
    memo: dict[str, dict[str, Any]] = {}
    step_attempts: dict[str, int] = {}
    for step_id, step in state["steps"].items():
        if step["status"] == "completed":
            memo[step_id] = {"data": step["output"]}
        elif step["status"] == "failed":
            memo[step_id] = {"error": step["error"]}
        elif step["status"] == "retrying":
            step_attempts[step_id] = len(step["attempts"])
    _note(state, now, "task.dispatched", detail={"seq": seq})
    task = Task(run_id=state["run_id"], fn_id=state["fn_id"], app_id=state["app_id"], seq=seq,
                partition_key=state["partition_key"], event=state["event"],
                events=state["events"] or [state["event"]], attempt=max([state["attempt"], *step_attempts.values()]),
                steps=memo, step_attempts=step_attempts, ts=now)
    return Emit("tasks", state["run_id"], task)


def _note(state: RunState, at: int, kind: str, step_id: str | None = None,
          attempt: int | None = None, detail: Any = None) -> None:
    entry: dict[str, Any] = {"at": at, "type": kind}
    if step_id is not None:
        entry["step_id"] = step_id
    if attempt is not None:
        entry["attempt"] = attempt
    if detail is not None:
        entry["detail"] = detail
    state["timeline"].append(entry)
