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
    """What starts a function: an event name (``*`` wildcards) and an optional CEL filter.

    On the wire (``FunctionRegistered.triggers``) an event trigger is
    ``{"event": name, "expression": CEL | None}`` and a cron trigger ``{"cron": expr}``.
    """

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
    # [{"event": name, "match": field | None, "if_exp": CEL | None,
    #   "timeout_ms": int | None}]: an event that cancels a run of this function.
    cancel: list[dict[str, JSON]] = field(default_factory=list)
    # {"start_ms": int | None, "finish_ms": int | None}
    timeouts: dict[str, JSON] | None = None
    # CEL over ``event``: at most one run per value of it per DEDUPE_WINDOW_MS.
    idempotency: str | None = None
    # Flow control, each option present only when set (None: none set; older records
    # have no such field and decode to None):
    # {"concurrency": [{"limit", "key", "scope": "fn" | "env", "mode": "step" | "run"}],
    #  "throttle": {"limit", "period_ms", "key", "burst"},
    #  "rate_limit": {"limit", "period_ms", "key"}, "priority": {"run"},
    #  "singleton": {"key", "mode": "skip" | "cancel"},
    #  "batch": {"max_size", "timeout_ms", "key", "if_exp"},
    #  "debounce": {"period_ms", "key", "timeout_ms" | None, "collect": bool}};
    # keys, "run" and "if_exp" are CEL.
    flow: dict[str, JSON] | None = None


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
    # At most one run per dedupe key within DEDUPE_WINDOW_MS (event id, or the
    # function's idempotency key); runs sharing a key share a partition key.
    dedupe_key: str | None = None
    # Set when a parent run's ``step.invoke`` started this run: {"run_id",
    # "partition_key", "step_id"}; the child's end is reported back as InvokeFinished.
    parent: dict[str, JSON] | None = None
    # The function's cancel rules: [{"event", "match", "if_exp", "timeout_ms"}].
    cancel: list[dict[str, JSON]] = field(default_factory=list)
    # {"start_ms": int | None, "finish_ms": int | None}
    timeouts: dict[str, JSON] | None = None
    # A cron tick: {"cron": expression, "tick_ms": int}. The run's partition keeps the
    # function's last fired tick, so a tick fired twice starts one run.
    cron: dict[str, JSON] | None = None
    # False for runs triggered by stepstream's own function.* events, so that a
    # function listening to function.finished does not feed itself for ever.
    lifecycle_events: bool = True
    # Flow control, evaluated by the router for this run (engine/runtime/flowkeys.py):
    # {"home": partition key, "concurrency": [{"gate", "limit", "mode", "key", "scope"}],
    #  "priority": seconds, "admitted": true once forwarded home past a dedupe key}.
    flow: dict[str, JSON] | None = None


# Events the engine itself sends (names start with INTERNAL_PREFIX).
INTERNAL_PREFIX = "stepstream/"
FUNCTION_FINISHED = "stepstream/function.finished"
FUNCTION_FAILED_EVENT = "stepstream/function.failed"
FUNCTION_CANCELLED_EVENT = "stepstream/function.cancelled"
FUNCTION_INVOKED = "stepstream/function.invoked"
CRON_EVENT = "stepstream/scheduled.timer"
LIFECYCLE_EVENTS = (FUNCTION_FINISHED, FUNCTION_FAILED_EVENT, FUNCTION_CANCELLED_EVENT)
# Event ids and idempotency keys are remembered this long.
DEDUPE_WINDOW_MS = 24 * 3_600_000


# Outcome ops, reported by a worker for one task.
STEP_COMPLETED = "step.completed"
STEP_FAILED = "step.failed"
STEP_SLEEP = "step.sleep"
STEP_WAIT = "step.wait"
STEP_INVOKE = "step.invoke"
FUNCTION_COMPLETED = "function.completed"
FUNCTION_FAILED = "function.failed"
OUTCOME_OPS = (STEP_COMPLETED, STEP_FAILED, STEP_SLEEP, STEP_WAIT, STEP_INVOKE,
               FUNCTION_COMPLETED, FUNCTION_FAILED)


@dataclass(slots=True)
class Outcome:
    """One result inside :class:`OutcomesReported`.

    * ``step.completed``: ``step_id``, ``output``
    * ``step.failed``: ``step_id``, ``error``, ``retriable``, optional ``retry_after_ms``
    * ``step.sleep``: ``step_id``, ``until_ms`` (wake no earlier than this)
    * ``step.wait``: ``step_id``, ``until_ms`` (the timeout), ``wait`` =
      ``{"event": name, "match": field path | None, "if_exp": CEL | None}``
    * ``step.invoke``: ``step_id``, ``until_ms`` (the timeout, or None), ``invoke`` =
      ``{"function_id": registered id, "data": map}``
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
    wait: dict[str, JSON] | None = None
    invoke: dict[str, JSON] | None = None


@dataclass(slots=True)
class OutcomesReported:
    """A worker's report for one task (``task_seq``): every new outcome it produced.

    Parallel steps discovered in one execution are reported together, so the fold can
    tell when a task is finished. Topic ``runs``, key = the run's partition key.

    ``more`` is True for a checkpoint inside a pass: the worker completed these steps
    and goes on with the same task without waiting for the engine (it produces this
    record, acknowledged, before the next step starts). Such a report holds only
    ``step.completed`` outcomes; the fold records them and keeps waiting for a report
    of the same task with ``more`` False, which ends the pass (docs/architecture.md,
    "Run-ahead").
    """

    KIND: ClassVar[str] = "outcomes.reported"
    VERSION: ClassVar[int] = 1
    run_id: str
    task_seq: int
    outcomes: list[Outcome]
    worker: str
    ts: int
    more: bool = False
    # True when the execution completed a step in one parallel line while another
    # stopped at a sleep, wait or invoke: the completed line can go on, so the engine
    # hands the run over again instead of waiting for the pause (engine/fold/pending.py).
    progress: bool = False


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
class RunStarted:
    """A worker began the first execution of a run that has a start timeout.
    Topic ``runs``, key = the run's partition key."""

    KIND: ClassVar[str] = "run.started"
    VERSION: ClassVar[int] = 1
    run_id: str
    task_seq: int
    worker: str
    ts: int


@dataclass(slots=True)
class CancelRequested:
    """Cancel a run (API, CLI). Topic ``runs``, key = the run's partition key.

    ``by`` says who: ``{"kind": "api", "reason": str | None}``.
    """

    KIND: ClassVar[str] = "run.cancel"
    VERSION: ClassVar[int] = 1
    run_id: str
    by: dict[str, JSON]
    ts: int


@dataclass(slots=True)
class InvokeFinished:
    """A child run started by ``step.invoke`` ended. Topic ``runs``, key = the parent's
    partition key. Exactly one of ``output`` / ``error`` is meaningful: ``error`` is
    set when the child failed, was cancelled, or its function does not exist."""

    KIND: ClassVar[str] = "invoke.finished"
    VERSION: ClassVar[int] = 1
    run_id: str
    step_id: str
    child_run_id: str
    output: JSON
    error: dict[str, JSON] | None
    ts: int


@dataclass(slots=True)
class InvokeRequested:
    """A run's ``step.invoke`` asks for a child run of ``fn_id``. Topic ``events``, key =
    ``event_id``; the router, which holds the registry, turns it into a RunRequested
    whose event is ``stepstream/function.invoked`` with ``data``."""

    KIND: ClassVar[str] = "invoke.requested"
    VERSION: ClassVar[int] = 1
    OMIT_NONE: ClassVar[tuple[str, ...]] = ("event_version",)
    fn_id: str
    data: dict[str, JSON]
    event_id: str
    parent: dict[str, JSON]
    ts: int
    # step.invoke(v=...): the invoked event's ``v`` (Inngest's event schema version).
    event_version: str | None = None


@dataclass(slots=True)
class WaitRegistered:
    """A run waits for an event (``kind`` "step": ``step.wait_for_event``; "cancel": a
    cancel rule). Topic ``waits``, key = the awaited event name, so the wait and every
    later event of that name meet, in order, on one partition.

    ``match_field``/``match_value``: the awaited event's field must equal this value
    (indexed). ``if_exp``: CEL over ``event`` (= ``trigger``) and ``async`` (the
    candidate). ``expires_ms``: forgotten after this time (None: until cleared).
    """

    KIND: ClassVar[str] = "wait.registered"
    VERSION: ClassVar[int] = 1
    wait_id: str
    run_id: str
    partition_key: str
    kind: str
    event: str
    match_field: str | None
    match_value: JSON
    if_exp: str | None
    trigger: dict[str, JSON]
    expires_ms: int | None
    ts: int


@dataclass(slots=True)
class WaitCleared:
    """Forget a wait (it timed out, or its run ended). Topic ``waits``, key = event name."""

    KIND: ClassVar[str] = "wait.cleared"
    VERSION: ClassVar[int] = 1
    wait_id: str
    event: str
    match_field: str | None
    match_value: JSON
    ts: int


@dataclass(slots=True)
class WaitResolved:
    """An event matched a wait. Topic ``runs``, key = the waiting run's partition key."""

    KIND: ClassVar[str] = "wait.resolved"
    VERSION: ClassVar[int] = 1
    run_id: str
    wait_id: str
    kind: str
    event: dict[str, JSON]
    ts: int


@dataclass(slots=True)
class Task:
    """Execute function ``fn_id`` for run ``run_id`` with these memoized outcomes.

    Topic ``tasks``, key = run id. ``steps`` maps a step id to ``{"data": value}``,
    ``{"error": {...}}`` (a step that exhausted its retries), or ``{"ref": [partition,
    offset, index]}``: the value is memoized in that ``runs`` record (value ``index`` of
    it), too large to carry inline. ``step_attempts`` maps a step id to the attempt
    number its next execution is (0 for the first). ``events`` is empty unless the run
    has a batch of events (then the run's events are ``[event]``).
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
    # Set on a run's first task when its function has a start timeout: the worker
    # then reports RunStarted as it begins.
    report_start: bool = False
    # The cron tick that started the run (ms), if any.
    cron_tick_ms: int | None = None
    # [partition, offset] of the ``runs`` record whose fold dispatched this task (set
    # by the engine's batch layer, not the fold). A worker taking the task over from
    # another reads the run's checkpoints (``more`` reports) from there on.
    runs_at: list[int] | None = None


@dataclass(slots=True)
class TaskCancelled:
    """The run ended (cancelled, or past a deadline) while task ``task_seq`` may be
    executing. Topic ``tasks``, key = run id, so it follows the task to its worker: a
    worker running that task ahead stops before its next step, and a worker that has
    not started it drops it."""

    KIND: ClassVar[str] = "task.cancelled"
    VERSION: ClassVar[int] = 1
    run_id: str
    app_id: str
    task_seq: int
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


@dataclass(slots=True)
class CancellationCreated:
    """A bulk cancellation (``POST /v1/cancellations``): its filter, and how many runs it
    matched and asked to cancel (one ``run.cancel`` each, on the runs' partitions).
    Topic ``cancellations`` (compacted, key = its id), read by ``GET /v1/cancellations``.
    Times are epoch ms: ``started_after`` inclusive, ``started_before`` exclusive."""

    KIND: ClassVar[str] = "cancellation.created"
    VERSION: ClassVar[int] = 1
    id: str
    app_id: str | None
    function_id: str | None
    started_after: int | None
    started_before: int
    if_exp: str | None
    matched: int
    ts: int


# What a dead letter keeps of a record that does not fit whole: enough to see what it
# was; a truncated record cannot be re-driven anyway.
DEAD_LETTER_PREFIX_BYTES = 64 * 1024
DEAD_LETTER_KEY_BYTES = 1024
DEAD_LETTER_REASON_CHARS = 2000
# Room left for everything but the value (field names, topic name, reason, key, extra).
DEAD_LETTER_ENVELOPE_BYTES = 16 * 1024


def bounded_dead_letter(*, source_topic: str, partition: int, offset: int,
                        key: bytes | None, value: bytes | None, reason: str, ts: int,
                        max_record_bytes: int, extra: dict[str, JSON] | None = None,
                        ) -> DeadLetter:
    """A dead letter for a record that always fits in ``max_record_bytes``.

    The value is kept whole when it fits, else only its first
    ``DEAD_LETTER_PREFIX_BYTES``; ``extra`` records ``value_bytes`` (the original size)
    and ``truncated``. The key and the reason are bounded too: a record just under the
    limit, or one far over it, must not yield a dead letter that cannot be written
    (it would stop the partition that tried).
    """
    info: dict[str, JSON] = dict(extra or {})
    size = len(value) if value is not None else 0
    room = max(0, max_record_bytes - DEAD_LETTER_ENVELOPE_BYTES)
    truncated = value is not None and size > room
    if value is not None and truncated:
        value = value[:min(room, DEAD_LETTER_PREFIX_BYTES)]
    info.update(value_bytes=size, truncated=truncated)
    if key is not None and len(key) > DEAD_LETTER_KEY_BYTES:
        info["key_bytes"] = len(key)
        key = key[:DEAD_LETTER_KEY_BYTES]
    if len(reason) > DEAD_LETTER_REASON_CHARS:
        reason = reason[:DEAD_LETTER_REASON_CHARS] + "..."
    return DeadLetter(source_topic=source_topic[:DEAD_LETTER_KEY_BYTES], partition=partition,
                      offset=offset, key=key, value=value, reason=reason, ts=ts, extra=info)


@dataclass(slots=True)
class RerunRequested:
    """Re-run a run (API, CLI): a new run ``run_id`` of ``fn_id`` with the same events.
    Topic ``events``, key = ``run_id``; the router, which holds the registry, turns it
    into a RunRequested with the function's current definition and flow keys.

    ``kept`` maps the step ids completed before ``from_step`` in the original run to
    ``{"name", "output"}`` (empty without ``from_step``); ``kept_order`` is their order.
    """

    KIND: ClassVar[str] = "run.rerun"
    VERSION: ClassVar[int] = 1
    run_id: str
    rerun_of: str
    rerun_of_key: str
    fn_id: str
    event: dict[str, JSON]
    events: list[dict[str, JSON]]
    from_step: str | None
    kept: dict[str, dict[str, JSON]]
    kept_order: list[str]
    ts: int
    cron: dict[str, JSON] | None = None


@dataclass(slots=True)
class RerunRunRequested(RunRequested):
    """A run that re-runs another: the router's RunRequested for a RerunRequested, a kind
    of its own so that ``run.requested`` stays as it was. Topic ``runs``, key = the new
    run's partition key (its flow-control home, else derived from its id). No dedupe
    key, cron tick, batch or debounce applies (engine/fold/rerun.py).

    ``rerun`` = ``{"of": run id, "of_key": its partition key, "from_step": step id |
    None, "kept": {step id: {"name", "output"}}, "kept_order": [step id]}``.
    """

    KIND: ClassVar[str] = "run.rerun.requested"
    VERSION: ClassVar[int] = 1
    rerun: dict[str, JSON] = field(default_factory=dict)


@dataclass(slots=True)
class RerunLinked:
    """Run ``rerun_id`` re-runs run ``run_id``: the link back, folded into the original.
    Topic ``runs``, key = the original run's partition key (written by the new run's
    fold when the new run begins)."""

    KIND: ClassVar[str] = "run.rerun.linked"
    VERSION: ClassVar[int] = 1
    run_id: str
    rerun_id: str
    from_step: str | None
    ts: int


Record = (
    Event | FunctionRegistered | RunRequested | OutcomesReported | TimerFired | Task
    | DeadLetter | RunStarted | CancelRequested | InvokeFinished | InvokeRequested
    | WaitRegistered | WaitCleared | WaitResolved | TaskCancelled | CancellationCreated
    | RerunRequested | RerunRunRequested | RerunLinked
)
RECORD_TYPES: dict[str, type] = {
    t.KIND: t
    for t in (Event, FunctionRegistered, RunRequested, OutcomesReported, TimerFired, Task,
              DeadLetter, RunStarted, CancelRequested, InvokeFinished, InvokeRequested,
              WaitRegistered, WaitCleared, WaitResolved, TaskCancelled,
              CancellationCreated, RerunRequested, RerunRunRequested, RerunLinked)
}
