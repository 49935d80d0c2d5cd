"""Re-runs: ``run.rerun.requested`` begins a new run of a function with another run's
events, and ``run.rerun.linked`` records the link in the original run. Pure, like
every module of :mod:`engine.fold`.

A re-run is explicit, so no dedupe key, cron tick, batch or debounce stops or delays
it; it still goes through the function's flow control (rate limit, singleton,
throttle, concurrency), which :func:`engine.fold.requested.begin_run` applies.
``from_step`` keeps the outputs of the steps the original completed before that
step: they are seeded into the new run's state as completed steps, so its first task
carries them as memoized outcomes and the worker does not execute them again.
"""

from __future__ import annotations

from typing import Any

from engine.fold.core import (
    Emit,
    Limits,
    NotApplicable,
    Position,
    RunState,
    Tables,
    note,
    value_size,
)
from engine.fold.requested import begin_run
from engine.runstate import StepState
from topics.records import RerunLinked, RerunRunRequested


def on_run_rerun_requested(tables: Tables, rec: RerunRunRequested, at: Position | None,
                       limits: Limits) -> list[Emit]:
    """Begin the re-run (once: a copy of the record finds the run there) and send the
    link to the original run's partition."""
    if tables.get_run(rec.run_id) is not None:
        return []
    info = rec.rerun
    original = str(info.get("of") or "")
    if not original:
        raise NotApplicable(f"run.rerun.requested for {rec.run_id} names no original run")
    from_step = info.get("from_step")
    from_step = from_step if isinstance(from_step, str) else None
    event_id = str(rec.event.get("id", ""))
    emits = begin_run(tables, rec, event_id, limits,
                      lambda state: seed(state, info, original, from_step))
    # Every event of a batch points at the re-run too (begin_run indexed the first).
    for event in rec.events or []:
        other = event.get("id") if isinstance(event, dict) else None
        if isinstance(other, str) and other and other != event_id:
            tables.index_event(other, rec.run_id)
    of_key = str(info.get("of_key") or original)
    emits.append(Emit("runs", of_key, RerunLinked(run_id=original, rerun_id=rec.run_id,
                                                  from_step=from_step, ts=rec.ts)))
    return emits


def seed(state: RunState, info: dict[str, Any], original: str, from_step: str | None
         ) -> None:
    """Mark the new run as a re-run of ``original`` and put the kept steps in its
    state as completed, in their original order, before its first task is built."""
    state["rerun_of"] = original
    kept = info.get("kept") or {}
    order = [s for s in info.get("kept_order") or [] if isinstance(s, str) and s in kept]
    for step_id in order:
        value = kept[step_id] if isinstance(kept[step_id], dict) else {}
        output = value.get("output")
        size = value_size(output)
        step: StepState = {"name": str(value.get("name") or step_id), "status": "completed",
                           "output": output, "error": None, "until_ms": None,
                           "attempts": [], "size": size}
        state["steps"][step_id] = step
        state["step_order"].append(step_id)
        state["state_bytes"] = state.get("state_bytes", 0) + size
    note(state, state["requested_at"], "rerun.of",
         detail={"run_id": original, "from_step": from_step, "kept": order})


def on_run_rerun_linked(tables: Tables, rec: RerunLinked, at: Position | None,
                    limits: Limits) -> list[Emit]:
    """The original run lists its re-run (once: a copy of the link changes nothing)."""
    state = tables.get_run(rec.run_id)
    if state is None:
        raise NotApplicable(f"run.rerun.linked for unknown run {rec.run_id}")
    reruns = state.get("reruns") or []
    if rec.rerun_id in reruns:
        return []
    state["reruns"] = [*reruns, rec.rerun_id]
    note(state, rec.ts, "rerun.started",
         detail={"run_id": rec.rerun_id, "from_step": rec.from_step})
    tables.put_run(rec.run_id, state)
    return []
