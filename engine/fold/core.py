"""What every part of the run fold shares: the tables interface, emits, dispatch, notes.

Pure: no I/O, no clock, no randomness (see :mod:`engine.fold`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from engine.runstate import RunState, StepState
from topics.codec import packb
from topics.records import Event, Record, Task
from topics.settings import MIB, Settings


class Tables(Protocol):
    """The part of one partition's tables the fold reads and writes."""

    def get_run(self, run_id: str) -> RunState | None: ...
    def put_run(self, run_id: str, state: RunState) -> None: ...
    def put_timer(self, due_ms: int, run_id: str, timer_id: str) -> None: ...
    def delete_timer(self, due_ms: int, run_id: str, timer_id: str) -> None: ...
    def index_event(self, event_id: str, run_id: str) -> None: ...
    def get_value(self, key: bytes) -> Any: ...
    def put_value(self, key: bytes, value: Any, *, expires_ms: int | None = None) -> None: ...
    def delete_value(self, key: bytes) -> None: ...
    # In key order; the first ``limit`` only, if given (a backlog's head).
    def scan_values(self, prefix: bytes, limit: int | None = None
                    ) -> list[tuple[bytes, Any]]: ...
    def expire(self, now_ms: int) -> list[bytes]: ...


class NotApplicable(ValueError):
    """A well-formed record that cannot apply to any state (it goes to the dead-letter
    topic); the tables are left untouched."""


@dataclass(slots=True)
class Emit:
    """A record the fold asks the processor to produce: ``topic`` is a logical name
    (``"tasks"``, ``"runs"``, ``"events"``, ``"waits"``), resolved by the processor."""

    topic: str
    key: str
    record: Record


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits of a run, fixed when it is requested (kept in its state as
    ``limits``), so a configuration change never alters a run already going."""

    # Events plus every recorded output (Inngest's 32 MB).
    state_bytes: int = 32 * MIB
    # The largest task a worker accepts (its record limit).
    task_bytes: int = 8 * MIB

    @staticmethod
    def from_settings(settings: Settings) -> Limits:
        return Limits(state_bytes=settings.max_run_state_bytes,
                      task_bytes=settings.max_record_bytes)

    def to_state(self) -> dict[str, int]:
        return {"state_bytes": self.state_bytes, "task_bytes": self.task_bytes}


def inline_budget(task_bytes: int) -> int:
    """Memoized values a task carries inline, in all; the rest go by reference."""
    return min(MIB, task_bytes // 4)


def run_limit(state: RunState, name: str) -> int:
    """One of the run's kept limits (``state_bytes``, ``task_bytes``); a run from
    before limits were kept has the defaults. Read per record: no object built."""
    kept = state.get("limits")
    value = kept.get(name) if kept else None
    return value if isinstance(value, int) else int(getattr(_DEFAULT_LIMITS, name))


@dataclass(frozen=True, slots=True)
class Position:
    """Where the record being applied sits on the ``runs`` topic. It is an input of the
    fold like the record itself (replay reads the same records at the same offsets), and
    lets a task point at a large value instead of carrying it."""

    partition: int
    offset: int

    def ref(self, index: int) -> list[int]:
        """A reference to the memoized value ``index`` of this record (an outcome's
        index in ``outcomes.reported``; 0 for ``wait.resolved``/``invoke.finished``)."""
        return [self.partition, self.offset, index]


_DEFAULT_LIMITS = Limits()


def value_size(value: Any) -> int:
    """Encoded size of a user value, as the codec writes it."""
    return len(packb(value))


def over_state_limit(state: RunState, size: int, what: str) -> dict[str, Any] | None:
    """Count ``size`` more bytes of output into the run's state, or, if that would take
    the state over its limit, return the run's error (and count nothing)."""
    total = state.get("state_bytes", 0) + size
    limit = run_limit(state, "state_bytes")
    if total <= limit:
        state["state_bytes"] = total
        return None
    return {"name": "RunStateTooLarge",
            "message": f"{what} is {size} bytes: with it the run's state (events and step "
                       f"outputs) would be {total} bytes, over the {limit}-byte limit "
                       "(STEPSTREAM_MAX_RUN_STATE_BYTES)",
            "stack": ""}


def keep_value(step: StepState, size: int, ref: list[int] | None) -> None:
    """Remember a memoized value's size and, if known, where it was recorded."""
    step["size"] = size
    if ref is not None:
        step["ref"] = ref
    else:
        step.pop("ref", None)


def dispatch(state: RunState, now: int) -> Emit:
    """Hand the run to a worker: a new task carrying every memoized outcome."""
    return build_task(state, now, run_limit(state, "task_bytes"))[0]


def build_task(state: RunState, now: int, task_bytes: int) -> tuple[Emit, int]:
    """:func:`dispatch`, and more bytes than the task can encode to. Small values go
    inline and, past the run's inline budget, recorded ones by reference."""
    seq = state["task_seq"] + 1
    state["task_seq"] = seq
    state["waiting"] = {"kind": "task", "seq": seq}
    if state["status"] == "queued":
        state["status"] = "running"
        state["started_at"] = now
    memo: dict[str, dict[str, Any]] = {}
    step_attempts: dict[str, int] = {}
    budget = inline_budget(task_bytes)
    # The bound: the events (counted in state_bytes), the values carried inline, the
    # ids (4 bytes a character at most in UTF-8), and 64 bytes a step of keys, headers
    # and a reference. A run from before sizes were kept gets no bound: encode it.
    counted = state.get("state_bytes")
    bound = (task_bytes + 1 if counted is None else counted) + 1024 + 4 * (
        len(state["run_id"]) + len(state["fn_id"]) + len(state["app_id"])
        + len(state["partition_key"]))
    steps = state["steps"]
    bound += 64 * len(steps)
    for step_id, step in steps.items():
        bound += 4 * len(step_id)
        status = step["status"]
        if status == "completed":
            key, value = "data", step["output"]
        elif status == "failed":
            key, value = "error", step["error"]
        else:
            if status == "retrying":
                step_attempts[step_id] = len(step["attempts"])
            continue
        size = step.get("size")
        if size is None:  # a sleep, or a step recorded before sizes were kept
            size = value_size(value)
        if size > budget and "ref" in step:
            memo[step_id] = {"ref": step["ref"]}
            continue
        budget = budget - size if size < budget else 0
        bound += size
        memo[step_id] = {key: value}
    note(state, now, "task.dispatched", detail={"seq": seq})
    cron = state.get("cron")
    task = Task(run_id=state["run_id"], fn_id=state["fn_id"], app_id=state["app_id"], seq=seq,
                partition_key=state["partition_key"], event=state["event"],
                # Empty unless a batch: the worker takes [event] then, and a large
                # event is not carried twice.
                events=state["events"],
                attempt=(max(state["attempt"], *step_attempts.values()) if step_attempts
                         else state["attempt"]),
                steps=memo, step_attempts=step_attempts, ts=now,
                report_start=seq == 1 and isinstance(
                    (state.get("timeouts") or {}).get("start_ms"), int),
                cron_tick_ms=cron["tick_ms"] if cron else None)
    return Emit("tasks", state["run_id"], task), bound


def event_body(event: Event) -> dict[str, Any]:
    """The event as a map, sharing its data: ``dataclasses.asdict`` deep-copies the data,
    which cost more than routing or matching the event itself (py-spy of a burst), and
    neither changes it."""
    return {"name": event.name, "data": event.data, "id": event.id, "ts": event.ts}


def note(state: RunState, at: int, kind: str, step_id: str | None = None,
         attempt: int | None = None, detail: Any = None) -> None:
    """Append a transition to the run's timeline."""
    entry: dict[str, Any] = {"at": at, "type": kind}
    if step_id is not None:
        entry["step_id"] = step_id
    if attempt is not None:
        entry["attempt"] = attempt
    if detail is not None:
        entry["detail"] = detail
    state["timeline"].append(entry)


def error_brief(error: dict[str, Any] | None) -> dict[str, Any]:
    if not error:
        return {}
    return {"error": f"{error.get('name', 'Error')}: {error.get('message', '')}"}


def field_path(path: str | None) -> str | None:
    """A match path as stored: ``event.``/``async.`` prefixes dropped (``data.id``)."""
    if not path:
        return None
    for prefix in ("event.", "async."):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def value_at(event: dict[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in an event dict, or None if any part is missing."""
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
        if node is None:
            return None
    return canonical(node)


def canonical(value: Any) -> Any:
    """A value in the one form equal values share, for index keys: integral floats as
    ints (JSON does not tell 5 from 5.0) and maps with sorted keys."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value
