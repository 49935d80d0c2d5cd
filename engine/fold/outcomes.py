"""``outcomes.reported``: a worker's report of one task — steps completed, failed
(retried with backoff, or memoized as errors), sleeping, waiting, invoking — or the
function's end. Pure, like every module of :mod:`engine.fold`."""

from __future__ import annotations

import hashlib

from engine.fold import pending
from engine.fold.core import (
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
from engine.fold.endings import fail, finish, hand_over, recorded
from engine.fold.invokes import begin_invoke
from engine.fold.timers import START_DEADLINE, mark_started
from engine.fold.waits import begin_wait
from engine.runstate import TERMINAL, StepState
from topics.records import (
    FUNCTION_COMPLETED,
    FUNCTION_FAILED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_INVOKE,
    STEP_SLEEP,
    STEP_WAIT,
    Outcome,
    OutcomesReported,
)

# A retry never waits longer than this, however many attempts came before.
MAX_BACKOFF_MS = 3_600_000


STEP_OPS = (STEP_COMPLETED, STEP_FAILED, STEP_SLEEP, STEP_WAIT, STEP_INVOKE)


PAUSING_OPS = (STEP_WAIT, STEP_INVOKE)


def on_outcomes_reported(tables: Tables, rec: OutcomesReported, at: Position | None,
                         limits: Limits) -> list[Emit]:
    state = tables.get_run(rec.run_id)
    if state is None:
        raise NotApplicable(f"outcomes for unknown run {rec.run_id}")
    if not rec.outcomes:
        raise NotApplicable(f"outcomes.reported for run {rec.run_id} carries no outcome")
    validate_outcomes(rec)
    waiting = state["waiting"]
    if state["status"] == "cancelled" and rec.task_seq == state["task_seq"]:
        # Steps that were executing (or run ahead) when the run was cancelled finished.
        _note_ignored(state, rec)
        tables.put_run(rec.run_id, state)
        return []
    if (state["status"] in TERMINAL or waiting is None or waiting["kind"] != "task"
            or waiting["seq"] != rec.task_seq):
        return []  # a stale task's report, or one already applied

    if START_DEADLINE in (state.get("deadlines") or {}):
        # The worker's run.started was lost or is late; a report proves the start.
        mark_started(tables, state, rec.ts, rec.worker)
    if rec.more:
        return _apply_checkpoint(tables, state, rec, at)
    timers: list[tuple[int, str, str | None]] = []  # (due, reason, step_id)
    pauses = [o for o in rec.outcomes if o.op in PAUSING_OPS]
    # A line can go on while others wait: a step completed next to a pause (the worker
    # says so), or a pending step resolved while the task was out (pending.py).
    news = bool(state.pop("woken", False)) or rec.progress
    emits: list[Emit] = []
    for index, outcome in enumerate(rec.outcomes):
        if state["status"] in TERMINAL:
            break
        if outcome.op in PAUSING_OPS:
            continue  # after the others, below
        if pending.is_pending(state, outcome.step_id):
            continue  # a sleep still pending, reported again by a line that met it
        if outcome.op in (STEP_COMPLETED, STEP_FAILED, STEP_SLEEP):
            timer = _apply_step_outcome(state, outcome, rec, at.ref(index) if at else None)
            if timer is not None:
                timers.append(timer)
            elif state["status"] == "failed":
                emits.extend(finish(tables, state, rec.ts))  # over the state limit
        elif outcome.op == FUNCTION_COMPLETED:
            error = over_state_limit(state, value_size(outcome.output), "the function's output")
            if error is not None:
                emits.extend(fail(tables, state, error, rec.ts))
                continue
            state["status"] = "completed"
            state["output"] = outcome.output
            state["ended_at"] = rec.ts
            note(state, rec.ts, "run.completed")
            emits.extend(finish(tables, state, rec.ts))
        elif outcome.op == FUNCTION_FAILED:
            timer = _apply_function_failed(state, outcome, rec)
            if timer is not None:
                timers.append(timer)
            elif state["status"] == "failed":
                emits.extend(finish(tables, state, rec.ts))
        else:
            # Unknown ops are rejected by validation below before anything is applied.
            raise AssertionError(outcome.op)

    if state["status"] in TERMINAL:
        state["waiting"] = None
    elif pending.several(state, len(pauses), len(timers), news):
        emits.extend(_pause_several(tables, state, rec, pauses, timers, news))
    elif pauses:
        o = pauses[0]
        step = _step(state, o)
        if step["status"] in ("completed", "failed"):
            emits.extend(hand_over(tables, state, rec.ts))
        else:
            begin = begin_wait if o.op == STEP_WAIT else begin_invoke
            kind = "wait" if o.op == STEP_WAIT else "invoke"
            state["waiting"], more = begin(tables, state, step, o, rec,
                                           f"{kind}:{state['task_seq']}")
            emits.extend(more)
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
        emits.extend(hand_over(tables, state, rec.ts))
    tables.put_run(rec.run_id, state)
    return emits


def _pause_several(tables: Tables, state: RunState, rec: OutcomesReported,
                   pauses: list[Outcome], timers: list[tuple[int, str, str | None]],
                   news: bool) -> list[Emit]:
    """Hold each new pause of the report as a pending step of its own (pending.py),
    then hand the run over or wait for one of them."""
    emits: list[Emit] = []
    for o in pauses:
        step = _step(state, o)
        step_id = o.step_id or ""
        if pending.is_pending(state, step_id) or step["status"] in ("completed", "failed"):
            continue  # still pending, or resolved while the task was out: reported again
        begin = begin_wait if o.op == STEP_WAIT else begin_invoke
        kind = "wait" if o.op == STEP_WAIT else "invoke"
        entry, more = begin(tables, state, step, o, rec, pending.timer_id(state, kind, step_id))
        pending.add(state, step_id, entry)
        emits.extend(more)
    for due, reason, timed_step in timers:
        pending.add_timer(tables, state, due, reason, timed_step)
    return emits + pending.go_on(tables, state, rec.ts, news)


def _note_ignored(state: RunState, rec: OutcomesReported) -> None:
    """Record, once per task, that a cancelled run's worker still reported steps; a
    worker running ahead adds its later steps to the same entry."""
    steps = [o.step_id for o in rec.outcomes if o.step_id]
    for entry in reversed(state["timeline"][-3:]):
        detail = entry.get("detail")
        if (entry["type"] == "outcome.ignored" and isinstance(detail, dict)
                and detail.get("task_seq") == rec.task_seq):
            detail["steps"].extend(s for s in steps if s not in detail["steps"])
            detail["last_report"] = bool(detail.get("last_report")) or not rec.more
            return
    # last_report: the worker's pass ended (it executes nothing more for this task).
    note(state, rec.ts, "outcome.ignored",
         detail={"task_seq": rec.task_seq, "reason": "the run was cancelled", "steps": steps,
                 "last_report": not rec.more})


def _apply_checkpoint(tables: Tables, state: RunState, rec: OutcomesReported,
                      at: Position | None) -> list[Emit]:
    """Steps a worker completed and went on past (``more``): record them; the task stays
    the one the run waits on, so the pass's last report is applied like any report."""
    emits: list[Emit] = []
    for index, outcome in enumerate(rec.outcomes):
        _apply_step_outcome(state, outcome, rec, at.ref(index) if at else None)
        if state["status"] == "failed":  # the output took the run over its state limit
            state["waiting"] = None
            emits.extend(finish(tables, state, rec.ts))
            break
    tables.put_run(rec.run_id, state)
    return emits


def validate_outcomes(rec: OutcomesReported) -> None:
    """Reject a report whose outcomes are malformed, before anything is applied."""
    if not isinstance(rec.more, bool):
        raise NotApplicable("outcomes.reported more must be a boolean")
    if not isinstance(rec.progress, bool):
        raise NotApplicable("outcomes.reported progress must be a boolean")
    if rec.more and any(o.op != STEP_COMPLETED for o in rec.outcomes):
        raise NotApplicable("a checkpoint (more=True) may hold only step.completed outcomes")
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


def _step(state: RunState, outcome: Outcome) -> StepState:
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
        recorded(state, step_id or "")
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
    recorded(state, step_id or "")
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
