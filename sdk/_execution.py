"""One execution of a function for a task: the pure core of the worker.

:func:`execute` calls the function with the task's memoized outcomes and returns the
new outcomes it produced plus the events its ``send_event`` steps want delivered. No
Kafka here; time comes from an injected clock, so it is tested without a broker.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from sdk import _outcomes
from sdk._context import Context, ReplayQuietLogger
from sdk._durations import wall_ms
from sdk._errors import StepError, is_quiet
from sdk._events import Event
from sdk._function import Function
from sdk._group import Group
from sdk._run_hooks import ExecutionHooks
from sdk._step import ExecutionState, Interrupt, NestedStepError, Step, start_line
from sdk._sync import run_sync
from topics import records
from topics.settings import Settings

function_logger = logging.getLogger("stepstream.function")
worker_log = logging.getLogger("stepstream.worker")


@dataclass(slots=True)
class ExecutionResult:
    """What one execution produced.

    ``outcomes`` go into one ``OutcomesReported``. ``sends`` maps the id of each new
    ``send_event`` step to the events that must be delivered before that step's
    outcome is reported.
    """

    outcomes: list[records.Outcome]
    sends: dict[str, list[records.Event]] = field(default_factory=dict)
    # A line can go on while another waits (OutcomesReported.progress).
    progress: bool = False

    @property
    def finished(self) -> bool:
        """True if the function itself completed or failed (no new steps)."""
        return any(o.op in (records.FUNCTION_COMPLETED, records.FUNCTION_FAILED)
                   for o in self.outcomes)


def check_task(task: records.Task) -> str | None:
    """Why ``task`` is malformed, or None. The codec checks fields exist, not types."""
    for name in ("run_id", "fn_id", "app_id", "partition_key"):
        value = getattr(task, name)
        if not isinstance(value, str) or not value:
            return f"task.{name} must be a non-empty string"
    for name in ("seq", "attempt", "ts"):
        value = getattr(task, name)
        if isinstance(value, bool) or not isinstance(value, int):
            return f"task.{name} must be an integer"
    if not isinstance(task.event, dict):
        return "task.event must be a map"
    if not isinstance(task.events, list) or not all(isinstance(e, dict) for e in task.events):
        return "task.events must be a list of maps"
    if not isinstance(task.steps, dict) or not all(isinstance(v, dict)
                                                   for v in task.steps.values()):
        return "task.steps must map step ids to maps"
    if not isinstance(task.step_attempts, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in task.step_attempts.values()
    ):
        return "task.step_attempts must map step ids to integers"
    if not isinstance(task.report_start, bool):
        return "task.report_start must be a boolean"
    at = task.runs_at
    if at is not None and not (isinstance(at, list) and len(at) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in at)):
        return "task.runs_at must be null or [partition, offset]"
    tick = task.cron_tick_ms
    if tick is not None and (isinstance(tick, bool) or not isinstance(tick, int)):
        return "task.cron_tick_ms must be an integer or null"
    return None


async def execute(
    function: Function,
    task: records.Task,
    *,
    settings: Settings,
    now_ms: Callable[[], int] = wall_ms,
    executor: Executor | None = None,
    logger: logging.Logger | None = None,
    checkpoint: Callable[[], Awaitable[None]] | None = None,
    step_type: type[Step] = Step,
) -> ExecutionResult:
    """Run ``function`` once against ``task``'s memoized steps.

    Returns the outcomes to report: the new steps met (one, or several from
    ``step.parallel``), or else the function's own completion or failure.
    Cancellation (worker shutdown) propagates; nothing is reported then. ``checkpoint``
    is awaited before a new step's handler runs (see :class:`~sdk._step.ExecutionState`);
    what it raises propagates too. ``step_type`` makes ``ctx.step`` (sdk.testing's
    stubs are a subclass). The client's and the function's middleware
    (:mod:`sdk._middleware`) run around it.
    """
    hooks = ExecutionHooks.create(function, task)
    result = await _execute_once(function, task, settings=settings, now_ms=now_ms,
                                 executor=executor, logger=logger, checkpoint=checkpoint,
                                 step_type=step_type, hooks=hooks)
    if hooks is None:
        return result
    return await hooks.finish(result, settings=settings, now_ms=now_ms())


async def _execute_once(
    function: Function,
    task: records.Task,
    *,
    settings: Settings,
    now_ms: Callable[[], int],
    executor: Executor | None,
    logger: logging.Logger | None,
    checkpoint: Callable[[], Awaitable[None]] | None,
    step_type: type[Step],
    hooks: ExecutionHooks | None,
) -> ExecutionResult:
    base_logger = logger or function_logger
    state = ExecutionState(
        run_id=task.run_id,
        app_id=task.app_id,
        steps=task.steps,
        step_attempts=task.step_attempts,
        settings=settings,
        now_ms=now_ms,
        logger=logging.LoggerAdapter(base_logger, {"run_id": task.run_id}),
        executor=executor,
        checkpoint=checkpoint,
        hooks=hooks,
    )
    event = Event.from_wire(task.event)
    ctx = Context(
        event=event,
        events=[Event.from_wire(e) for e in task.events] or [event],
        run_id=task.run_id,
        attempt=task.attempt,
        step=step_type(state),
        group=Group(state),
        logger=ReplayQuietLogger(base_logger, task.run_id, lambda: state.replaying,
                                 function.id),
        cron_tick=_utc(task.cron_tick_ms),
    )
    if hooks is not None and not await hooks.begin(ctx, function, state):
        return ExecutionResult([])  # hooks.finish reports the hook's failure
    # The body runs in its own task with a fresh line of control, so its context
    # variables never leak into the caller's.
    body = asyncio.get_running_loop().create_task(_invoke(function, ctx), context=start_line())
    error: Exception | None = None
    output: Any = None
    try:
        output = await body
    except (Interrupt, NestedStepError):
        pass
    except Exception as exc:
        error = exc
    if hooks is not None:
        await hooks.body_ended(error)

    if state.nested is not None:
        # Checked first: whatever the outer step returned was computed without the
        # inner step, and retrying would nest again.
        return ExecutionResult([records.Outcome(
            op=records.FUNCTION_FAILED, retriable=False,
            error=_outcomes.error_named("NestedStepError", state.nested),
        )])
    if state.found_new:
        # Whatever the body did after meeting a new step (swallowing the interrupt,
        # returning, raising) is ignored: it ran past a step whose outcome is unknown.
        found = state.outcomes()
        if not found:
            # Only if a step's own execution was torn down by a BaseException that
            # the body then swallowed; try again.
            return ExecutionResult([records.Outcome(
                op=records.FUNCTION_FAILED, retriable=True,
                error=_outcomes.error_named("Interrupted", "a new step ended without outcome"),
            )])
        reported = {o.step_id for o in found}
        return ExecutionResult(found, {k: v for k, v in state.sends.items() if k in reported},
                               progress=_progress(found))
    if error is not None:
        if not isinstance(error, StepError) and not is_quiet(error):
            # INFO on the worker's logger, not the function's: the engine decides whether
            # this retries, and `stepstream dev` prints one line saying so. A StepError's
            # step was logged when it failed; quiet=True errors asked for no line.
            worker_log.info("run %s: function %s raised %s: %s", task.run_id, function.id,
                            type(error).__name__, error)
        return ExecutionResult([_outcomes.function_failed(error, now_ms=now_ms())])
    return ExecutionResult([_outcomes.function_completed(function.id, output, settings,
                                                         function.output_type)])


async def _invoke(function: Function, ctx: Context) -> Any:
    if function.is_sync:
        return await run_sync(function.handler, ctx)
    return await function.handler(ctx)  # type: ignore[arg-type]


def _progress(found: list[records.Outcome]) -> bool:
    """Whether a line stopped at a step recorded now (it can go on) while another stopped
    at a sleep, wait or invoke: the engine then hands the run over again at once
    instead of waiting for the pause (engine/fold/pending.py)."""
    return (any(o.op in (records.STEP_COMPLETED, records.STEP_FAILED) for o in found)
            and any(o.op in _PAUSES for o in found))


# Steps only the engine can end.
_PAUSES = (records.STEP_SLEEP, records.STEP_WAIT, records.STEP_INVOKE)


def _utc(ms: int | None) -> datetime.datetime | None:
    if ms is None:
        return None
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        milliseconds=ms)


def function_not_found(task: records.Task) -> ExecutionResult:
    """The report for a task naming a function this app does not have."""
    return ExecutionResult([records.Outcome(
        op=records.FUNCTION_FAILED, retriable=False,
        error=_outcomes.error_named(
            "FunctionNotFound",
            f"app {task.app_id!r} has no function {task.fn_id!r} in this worker",
        ),
    )])
