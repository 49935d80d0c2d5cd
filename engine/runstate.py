"""The shape of a run's state, as the run fold keeps it (one msgpack map per run).

``TypedDict``s: plain dicts at run time, so the stored bytes and the state hash are
what they were; mypy checks every key the fold, the store and the API read or write.
Keys marked ``NotRequired`` are absent from states written before they existed (the
fold reads them with ``.get``). docs/architecture.md ("Run state") explains the fields.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# The statuses a run ends in: no record changes it after that.
# ``skipped``: flow control started no run for the event (a rate limit, a singleton in
# skip mode); the run's state records why.
TERMINAL = frozenset({"completed", "failed", "cancelled", "skipped"})


class WaitingTask(TypedDict):
    """Handed to workers as task ``seq``; waiting for its report."""

    kind: Literal["task"]
    seq: int


class WaitingTimer(TypedDict):
    """Asleep until ``due_ms``: a ``step.sleep``, or a retry's backoff."""

    kind: Literal["timer"]
    timer_id: str
    due_ms: int
    reason: str
    step_id: str | None


class WaitingEvent(TypedDict):
    """Paused on ``step.wait_for_event`` until the matcher resolves ``wait_id`` or the
    timer fires."""

    kind: Literal["event"]
    step_id: str
    wait_id: str
    event: str
    match_field: str | None
    match_value: Any
    timer_id: str
    due_ms: int


class WaitingInvoke(TypedDict):
    """Paused on ``step.invoke`` until the child run reports its end (or the timer)."""

    kind: Literal["invoke"]
    step_id: str
    child_run_id: str
    function_id: str
    timer_id: str | None
    due_ms: int | None


class WaitingSlot(TypedDict):
    """Queued for a concurrency slot of gate ``gate`` (flow control) since ``since``."""

    kind: Literal["slot"]
    gate: str
    limit: int
    key: str | None
    since: int


class WaitingThrottle(TypedDict):
    """Queued behind throttle gate ``gate`` (flow control) since ``since``: the gate's
    timer starts it when GCRA allows."""

    kind: Literal["throttle"]
    gate: str
    limit: int
    period: str  # "1s", "5m": the throttle's period, for people
    key: str | None
    since: int


class WaitingSteps(TypedDict):
    """Paused on several steps at once (parallel lines waiting on events, child runs
    and timers side by side): the run's ``pending`` entries, by step id. Any one
    resolving hands the run over again (engine/fold/pending.py)."""

    kind: Literal["steps"]
    step_ids: list[str]


Waiting = (WaitingTask | WaitingTimer | WaitingEvent | WaitingInvoke | WaitingSlot
           | WaitingThrottle | WaitingSteps)

# One of several pauses the run has at once, keyed by step id in ``pending`` ("" for a
# function-level retry): the same shapes as the single pause in ``waiting``.
Pending = WaitingTimer | WaitingEvent | WaitingInvoke


class StepState(TypedDict):
    """One step's memo and history within the run."""

    name: str
    status: str
    output: Any
    error: dict[str, Any] | None
    until_ms: int | None
    attempts: list[dict[str, Any]]
    # Bytes of the kept value, and where a large one lives on ``runs`` (a reference).
    size: NotRequired[int]
    ref: NotRequired[list[int]]


class CancelWait(TypedDict):
    """A wait a cancel rule registered, to clear when the run ends."""

    wait_id: str
    event: str
    match_field: str | None
    match_value: Any


class RunState(TypedDict):
    """One run: its request, where it is, its steps and its timeline."""

    run_id: str
    fn_id: str
    app_id: str
    partition_key: str
    event: dict[str, Any]
    events: list[dict[str, Any]]
    status: str
    requested_at: int
    started_at: int | None
    ended_at: int | None
    output: Any
    error: dict[str, Any] | None
    retries: int
    backoff_base_ms: int
    attempt: int
    task_seq: int
    waiting: Waiting | None
    step_order: list[str]
    steps: dict[str, StepState]
    timeline: list[dict[str, Any]]
    dedupe_key: str | None
    parent: dict[str, Any] | None
    cancel: list[dict[str, Any]]
    timeouts: dict[str, Any] | None
    cron: dict[str, Any] | None
    lifecycle_events: bool
    deadlines: dict[str, int]
    cancel_waits: list[CancelWait]
    cancelled_by: dict[str, Any] | None
    limits: NotRequired[dict[str, int]]
    state_bytes: NotRequired[int]
    worker_started: NotRequired[int]
    # Flow control: the gates the router evaluated (RunRequested.flow), and the gates
    # whose slot the run holds now.
    flow: NotRequired[dict[str, Any] | None]
    slots: NotRequired[list[str]]
    # Set once an ended run has left every gate (its backlog places, its singleton).
    gates_left: NotRequired[bool]
    # Re-runs (engine/fold/rerun.py): the run this one re-runs, and the runs re-running
    # this one, in the order their links were folded.
    rerun_of: NotRequired[str]
    reruns: NotRequired[list[str]]
    # Several pauses at once (engine/fold/pending.py): each resolves on its own. Absent
    # while the run has at most one, so single pauses keep their state (and its hash).
    pending: NotRequired[dict[str, Pending]]
    # A pending step resolved while a task was out: the worker did not see it, so the
    # run is handed over again when that task reports.
    woken: NotRequired[bool]


def waiting_timer(waiting: Waiting | None) -> tuple[int, str] | None:
    """``(due_ms, timer_id)`` of the timer the run is paused on, if any (a task has
    none; a wait or an invoke without a timeout has none)."""
    if (waiting is None or waiting["kind"] == "task" or waiting["kind"] == "slot"
            or waiting["kind"] == "throttle" or waiting["kind"] == "steps"):
        return None
    timer_id, due = waiting["timer_id"], waiting["due_ms"]
    return (due, timer_id) if timer_id and due is not None else None
