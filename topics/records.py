"""Record types: every value written to a stepstream topic.

A record is a command (imperative name) or an event (past tense). On the wire each is a
msgpack map ``{"k": kind, "v": version, ...fields}``; see :mod:`topics.codec`. Fields
that hold user data (event data, step output) must be JSON-compatible values.

Times are integer milliseconds since the Unix epoch, set by whoever writes the record;
the fold takes time only from records, never from a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

JSON = Any  # a JSON-compatible value: None, bool, int, float, str, list, dict[str, ...]


@dataclass(slots=True)
class Event:
    """A named fact with data; topic ``events``, key = event id."""

    KIND: ClassVar[str] = "event"
    VERSION: ClassVar[int] = 1
    name: str
    data: dict[str, JSON]
    id: str
    ts: int


@dataclass(slots=True)
class Trigger:
    """What starts a function: an event name (``*`` wildcards) and an optional CEL filter."""

    event: str
    expression: str | None = None


@dataclass(slots=True)
class FunctionRegistered:
    """A function definition published by a worker at start; topic ``functions`` (compacted)."""

    KIND: ClassVar[str] = "function.registered"
    VERSION: ClassVar[int] = 1
    fn_id: str
    app_id: str
    name: str
    triggers: list[dict[str, JSON]]
    retries: int
    ts: int


@dataclass(slots=True)
class RunRequested:
    """The router matched an event to a function: start a run. Topic ``runs``.

    ``retries`` and ``backoff_base_ms`` are fixed when the run is requested, so the
    run's fold never consults the registry or configuration and replay is independent
    of both.
    """

    KIND: ClassVar[str] = "run.requested"
    VERSION: ClassVar[int] = 1
    run_id: str
    fn_id: str
    app_id: str
    partition_key: str
    event: dict[str, JSON]
    events: list[dict[str, JSON]]
    retries: int
    backoff_base_ms: int
    ts: int


# Outcome ops, reported by a worker for one task.
STEP_COMPLETED = "step.completed"
STEP_FAILED = "step.failed"
STEP_SLEEP = "step.sleep"
FUNCTION_COMPLETED = "function.completed"
FUNCTION_FAILED = "function.failed"
OUTCOME_OPS = (STEP_COMPLETED, STEP_FAILED, STEP_SLEEP, FUNCTION_COMPLETED, FUNCTION_FAILED)


@dataclass(slots=True)
class Outcome:
    """One result inside :class:`OutcomesReported`.

    * ``step.completed``: ``step_id``, ``output``
    * ``step.failed``: ``step_id``, ``error``, ``retriable``, optional ``retry_after_ms``
    * ``step.sleep``: ``step_id``, ``until_ms`` (wake no earlier than this)
    * ``function.completed``: ``output``
    * ``function.failed``: ``error``, ``retriable``, optional ``retry_after_ms``

    ``error`` is ``{"name": str, "message": str, "stack": str}``.
    """

    op: str
    step_id: str | None = None
    name: str | None = None
    output: JSON = None
    error: dict[str, JSON] | None = None
    retriable: bool = True
    retry_after_ms: int | None = None
    until_ms: int | None = None
    started_at: int | None = None
    ended_at: int | None = None


@dataclass(slots=True)
class OutcomesReported:
    """A worker's report for one task (``task_seq``): every new outcome it produced.

    Parallel steps discovered in one pass are reported together, so the fold can tell
    when a task is finished. Topic ``runs``, key = the run's partition key.
    """

    KIND: ClassVar[str] = "outcomes.reported"
    VERSION: ClassVar[int] = 1
    run_id: str
    task_seq: int
    outcomes: list[Outcome]
    worker: str
    ts: int


@dataclass(slots=True)
class TimerFired:
    """A timer reached its due time. Written by the engine's timer service; topic ``runs``."""

    KIND: ClassVar[str] = "timer.fired"
    VERSION: ClassVar[int] = 1
    run_id: str
    timer_id: str
    due_ms: int
    ts: int


@dataclass(slots=True)
class Task:
    """Execute function ``fn_id`` for run ``run_id`` with these memoized outcomes.

    Topic ``tasks``, key = run id. ``steps`` maps a step id to ``{"data": value}`` or
    ``{"error": {...}}`` (a step that exhausted its retries). ``step_attempts`` maps a
    step id to the attempt number its next execution is (0 for the first).
    """

    KIND: ClassVar[str] = "task"
    VERSION: ClassVar[int] = 1
    run_id: str
    fn_id: str
    app_id: str
    seq: int
    partition_key: str
    event: dict[str, JSON]
    events: list[dict[str, JSON]]
    attempt: int
    steps: dict[str, dict[str, JSON]]
    step_attempts: dict[str, int]
    ts: int


@dataclass(slots=True)
class DeadLetter:
    """A record that could not be decoded or applied, with the reason. Topic ``dlq``."""

    KIND: ClassVar[str] = "dead.letter"
    VERSION: ClassVar[int] = 1
    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    ts: int
    extra: dict[str, JSON] = field(default_factory=dict)


Record = (
    Event | FunctionRegistered | RunRequested | OutcomesReported | TimerFired | Task | DeadLetter
)
RECORD_TYPES: dict[str, type] = {
    t.KIND: t
    for t in (Event, FunctionRegistered, RunRequested, OutcomesReported, TimerFired, Task,
              DeadLetter)
}
