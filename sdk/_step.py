"""``ctx.step``: memoized steps over one execution of a function.

Replay model: every ``step.*`` call whose id has a memoized outcome returns it (or
raises :class:`~sdk.StepError`) at once, without suspending, so replays take
the same path every time. The first new step of a line of control is executed (or
planned, for sleeps, waits for events and invocations), its outcome collected, and
that line is stopped with :class:`Interrupt`. A line of control is the function body,
or one callable given to ``ctx.group.parallel`` (sdk/_group.py); that is how parallel
steps get reported together.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, overload

from sdk import _outcomes
from sdk._durations import Duration, datetime_ms, duration_ms
from sdk._errors import EventError, NonRetriableError, StepError
from sdk._events import Event, as_list, to_record
from sdk._expressions import cel_problem, match_path
from sdk._function import Function
from sdk._serializer import output_type_for
from topics import error_codes, records
from topics.codec import PayloadError, check_payload
from topics.ids import sent_event_id, ulid_ms
from topics.settings import Settings

if TYPE_CHECKING:
    from sdk._group import ParallelMode

T = TypeVar("T")


class Interrupt(BaseException):
    """Stops the function after a new step; internal.

    A BaseException so that ``except Exception`` in user code does not swallow it.
    """


class NestedStepError(BaseException):
    """A step was called inside another step's handler; fails the run for good.

    A BaseException, like :class:`Interrupt`, so that the outer handler's ``except
    Exception`` cannot swallow it and let the run complete without the inner step.
    The execution also remembers it, so even a deliberate ``except BaseException``
    does not hide it.
    """


@dataclass(slots=True)
class Line:
    """One line of control; ``stopped`` once it met a new step. ``last`` is the place
    in the run's history (the memo's order) of the latest recorded step it met: a RACE
    group's winner is the finished line with the lowest (sdk/_group.py)."""

    stopped: bool = False
    last: int = -1

    @staticmethod
    def enter(line: Line, probing: bool = False) -> None:
        """Make ``line`` the current task's line; ``probing``: its new steps stop it
        unstarted (a RACE looking for its winner among recorded steps)."""
        _line.set(line)
        if probing:
            _probing.set(True)


# Parallel callables run as asyncio tasks, which copy the context, so each one sees
# the line it was started with.
_line: contextvars.ContextVar[Line] = contextvars.ContextVar("stepstream_line")
_in_step: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stepstream_in_step", default=None
)
_probing: contextvars.ContextVar[bool] = contextvars.ContextVar("stepstream_probing",
                                                                default=False)


def current_line() -> Line:
    line = _line.get(None)
    if line is None:
        raise RuntimeError("ctx.step was used outside the execution of its function")
    return line


@dataclass(slots=True)
class ExecutionState:
    """What one execution knows and what it has found; shared by all its lines."""

    run_id: str
    app_id: str
    steps: dict[str, dict[str, Any]]
    step_attempts: dict[str, int]
    settings: Settings
    now_ms: Callable[[], int]
    logger: logging.Logger | logging.LoggerAdapter[Any]
    executor: Executor | None = None
    used: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    visited: set[str] = field(default_factory=set)
    # Outcomes in the order their steps were met, so reports are deterministic even
    # when parallel steps finish in any order.
    slots: list[records.Outcome | None] = field(default_factory=list)
    sends: dict[str, list[records.Event]] = field(default_factory=dict)
    # Why the run must fail: the first step called inside another step's handler.
    nested: str | None = None
    # Awaited before a step's handler runs: a worker running ahead records the steps it
    # completed earlier in the pass first (sdk/_pass.py), so none of them runs again.
    checkpoint: Callable[[], Awaitable[None]] | None = None
    order: dict[str, int] | None = None
    # The execution's middleware hooks (sdk/_run_hooks.py ExecutionHooks), or None.
    hooks: Any = None

    def next_id(self, user_id: str) -> str:
        """The step id for the next use of ``user_id``: "x", then "x:1", "x:2", ..."""
        if not isinstance(user_id, str) or not user_id:
            raise TypeError(f"a step id must be a non-empty string, got {user_id!r}")
        if user_id not in self.used:
            step_id = user_id
        else:
            n = self.counters.get(user_id, 1)
            while f"{user_id}:{n}" in self.used:
                n += 1
            self.counters[user_id] = n + 1
            step_id = f"{user_id}:{n}"
        self.used.add(step_id)
        self.names[step_id] = user_id
        return step_id

    @property
    def found_new(self) -> bool:
        return bool(self.slots)

    @property
    def replaying(self) -> bool:
        """True while the function is still walking through memoized steps."""
        return not self.slots and len(self.visited) < len(self.steps)

    def outcomes(self) -> list[records.Outcome]:
        return [o for o in self.slots if o is not None]

    def index(self, step_id: str) -> int:
        """Where memoized ``step_id`` stands in the run's history: tasks carry the steps
        in the order their outcomes were recorded."""
        if self.order is None or len(self.order) != len(self.steps):
            self.order = {sid: i for i, sid in enumerate(self.steps)}
        return self.order.get(step_id, -1)

    def mark(self) -> tuple[set[str], dict[str, str], dict[str, int], set[str]]:
        """The step ids handed out so far, to :meth:`reset` to after a RACE's replay."""
        return set(self.used), dict(self.names), dict(self.counters), set(self.visited)

    def reset(self, mark: tuple[set[str], dict[str, str], dict[str, int], set[str]]) -> None:
        self.used, self.names, self.counters, self.visited = mark


_MISSING: Any = object()


class Step:
    """The step API of one execution (``ctx.step``)."""

    def __init__(self, state: ExecutionState) -> None:
        self._state = state

    # -- helpers ---------------------------------------------------------------------

    def _enter(self, user_id: str) -> str:
        """The step id for this call of ``user_id``."""
        outer = _in_step.get()
        if outer is not None:
            message = (f"step {user_id!r} was called inside the handler of step {outer!r}: "
                       "steps cannot be nested; call both from the function body")
            if self._state.nested is None:
                self._state.nested = message
            raise NestedStepError(message)
        return self._state.next_id(user_id)

    def _memo(self, step_id: str) -> Any:
        """The memoized value of ``step_id``, ``_MISSING``, or raise its StepError."""
        entry = self._state.steps.get(step_id)
        if entry is None:
            return _MISSING
        self._state.visited.add(step_id)
        line = _line.get(None)
        if line is not None:
            line.last = max(line.last, self._state.index(step_id))
        if isinstance(entry, dict) and entry.get("error") is not None:
            err = entry["error"]
            err = err if isinstance(err, dict) else {"message": str(err)}
            raise StepError(
                str(err.get("message", "")),
                name=str(err.get("name") or "Error"),
                stack=err.get("stack") if isinstance(err.get("stack"), str) else None,
                step_id=step_id, code=error_codes.step_code(err),
            )
        return entry.get("data") if isinstance(entry, dict) else None

    def _begin_new(self, step_id: str) -> int:
        """Claim the current line for the new step ``step_id``; return its slot."""
        line = current_line()
        if line.stopped or _probing.get():
            raise Interrupt()
        line.stopped = True
        self._state.slots.append(None)
        return len(self._state.slots) - 1

    def _finish(self, slot: int, outcome: records.Outcome) -> NoReturn:
        self._state.slots[slot] = outcome
        raise Interrupt()

    # -- the API ---------------------------------------------------------------------

    @overload
    async def run(self, step_id: str, handler: Callable[..., Awaitable[T]], *args: Any,
                  output_type: Any = None, output_serializer: Any = None) -> T: ...

    @overload
    async def run(self, step_id: str, handler: Callable[..., T], *args: Any,
                  output_type: Any = None, output_serializer: Any = None) -> T: ...

    async def run(self, step_id: str, handler: Callable[..., Any], *args: Any,
                  output_type: Any = None, output_serializer: Any = None) -> Any:
        """Run ``handler(*args)`` once as step ``step_id`` and return its result.

        ``handler`` may be sync (run in a thread) or async. Its result must be
        JSON-compatible; it is memoized, so later executions get the stored value.
        With ``output_type`` (a pydantic model or type; ``output_serializer`` is
        Inngest's newer name for it) the result is stored as its JSON form and returned
        as that type, also on replay (needs ``stepstream[pydantic]``).
        Raises :class:`~sdk.StepError` if the step failed for good.
        """
        typed = output_type_for(output_type, output_serializer, f"step {step_id!r}",
                                error=NonRetriableError)
        step_id = self._enter(step_id)
        if self._state.hooks is not None:
            await self._state.hooks.step(self._state, step_id)
        memo = self._memo(step_id)
        if memo is not _MISSING:
            return memo if typed is None else typed.load(memo)
        if not callable(handler):
            raise TypeError(f"step {step_id!r}: handler is not callable")
        slot = self._begin_new(step_id)
        name = self._state.names[step_id]
        state = self._state
        state.logger.debug("step %r: running (attempt %d)", step_id,
                           state.step_attempts.get(step_id, 0))
        if state.checkpoint is not None:
            await state.checkpoint()
        started = state.now_ms()
        token = _in_step.set(step_id)
        try:
            value = await _call(handler, args, state.executor)
            if typed is not None:
                value = typed.dump(value)
        except Exception as exc:
            _outcomes.log_step_failure(state.run_id, step_id, exc)
            self._finish(slot, _outcomes.step_failed(step_id, name, exc,
                                                           now_ms=state.now_ms(),
                                                           started_at=started))
        finally:
            _in_step.reset(token)
        self._finish(slot, _outcomes.step_completed(
            step_id, name, value, state.settings, started_at=started, ended_at=state.now_ms()
        ))

    async def sleep(self, step_id: str, duration: Duration) -> None:
        """Pause the run for ``duration`` without holding a worker.

        ``duration`` is milliseconds (int), a timedelta, or "500ms", "2s", "5m", "1h", "1d".
        """
        ms = duration_ms(duration)
        await self._sleep(step_id, lambda now: now + ms)

    async def sleep_until(self, step_id: str, until: datetime.datetime | str) -> None:
        """Pause the run until ``until`` (a naive datetime is UTC)."""
        target = datetime_ms(until)
        await self._sleep(step_id, lambda now: target)

    async def _sleep(self, step_id: str, until: Callable[[int], int]) -> None:
        step_id = self._enter(step_id)
        if self._memo(step_id) is not _MISSING:
            return
        slot = self._begin_new(step_id)
        self._finish(slot, records.Outcome(op=records.STEP_SLEEP, step_id=step_id,
                                           name=self._state.names[step_id],
                                           until_ms=until(self._state.now_ms())))

    async def send_event(self, step_id: str, events: Event | list[Event]) -> list[str]:
        """Send one event or a list of them, once, as step ``step_id``; return their ids.

        Events without an id get one derived from the run and step, so a step that is
        executed again sends the same ids and the duplicates are ignored downstream.
        """
        step_id = self._enter(step_id)
        if self._state.hooks is not None:
            await self._state.hooks.step(self._state, step_id)
        memo = self._memo(step_id)
        if memo is not _MISSING:
            return memo
        slot = self._begin_new(step_id)
        state = self._state
        now = state.now_ms()
        name = self._state.names[step_id]
        if state.hooks is not None:
            events = await state.hooks.before_send(state, slot, step_id, name, events)
        try:
            wire = [
                to_record(e, default_id=sent_event_id(state.run_id, step_id, i,
                                                      _id_time(state.run_id)),
                          now_ms=now, settings=state.settings)
                for i, e in enumerate(as_list(events))
            ]
        except EventError as exc:
            # The same events would fail the same way on a retry.
            failure = _outcomes.error_named("EventError", f"step {step_id!r}: {exc}")
            self._finish(slot, records.Outcome(
                op=records.STEP_FAILED, step_id=step_id, name=name, error=failure,
                retriable=False, started_at=now, ended_at=now,
            ))
        state.sends[step_id] = wire
        self._finish(slot, records.Outcome(
            op=records.STEP_COMPLETED, step_id=step_id, name=name,
            output=[e.id for e in wire], started_at=now, ended_at=now,
        ))

    async def wait_for_event(self, step_id: str, *, event: str, timeout: Duration,
                             match: str | None = None,
                             if_exp: str | None = None) -> Event | None:
        """Pause the run until an event named ``event`` arrives; return it, or None if
        ``timeout`` passed first. Only events sent after the wait began count.

        ``match`` is a field path ("data.invoice_id"; a leading ``event.`` or ``async.``
        is stripped) that must be equal in this run's triggering event and the awaited
        one. ``if_exp`` is a CEL condition over ``event`` (the triggering event) and
        ``async`` (the candidate), e.g. ``"async.data.amount > event.data.amount"``.
        ``timeout`` is required and more than 0 (ms, timedelta or "1h").

        It may stand in a parallel line next to other steps (``ctx.group.parallel``):
        each wait of a run resolves on its own. Arguments that cannot work raise
        TypeError or ValueError here.
        """
        if not isinstance(event, str) or not event.strip():
            raise TypeError(f"step {step_id!r}: event must be a non-empty event name, "
                            f"got {event!r}")
        ms = _timeout_ms(step_id, timeout)
        if ms is None:
            raise TypeError(f"step {step_id!r}: wait_for_event needs a timeout")
        path = match_path(match) if match is not None else None
        if if_exp is not None:
            problem = cel_problem(if_exp)
            if problem is not None:
                raise ValueError(f"step {step_id!r}: if_exp {if_exp!r} {problem}")
        step_id = self._enter(step_id)
        memo = self._memo(step_id)
        if memo is not _MISSING:
            return Event.from_wire(memo) if isinstance(memo, dict) else None
        slot = self._begin_new(step_id)
        self._finish(slot, records.Outcome(
            op=records.STEP_WAIT, step_id=step_id, name=self._state.names[step_id],
            until_ms=self._state.now_ms() + ms,
            wait={"event": event, "match": path, "if_exp": if_exp},
        ))

    async def invoke(self, step_id: str, *, function: Function,
                     data: dict[str, Any] | None = None,
                     timeout: Duration | None = None, v: str | None = None) -> Any:
        """Run ``function`` as a child run with ``data`` as its event data, and return
        its output once it completes.

        The child's ``ctx.event`` is a ``stepstream/function.invoked`` event (its ``v``
        is ``v``, as in Inngest). If the
        child fails (or ``timeout`` passes first), this raises
        :class:`~sdk.StepError`. ``data`` must be JSON-compatible: if it is not,
        the step fails without retries, naming it.

        Invokes may fan out in parallel lines (``ctx.group.parallel``): each child's
        end resolves its own step, and a failed child fails only that line's step.
        """
        if not isinstance(function, Function):
            raise TypeError(f"step {step_id!r}: function must be an sdk.Function (what "
                            f"create_function returns), got {type(function).__name__}; "
                            "use invoke_by_id for a function id")
        return await self._invoke(step_id, function.id, data, timeout, v)

    async def invoke_by_id(self, step_id: str, *, function_id: str, app_id: str | None = None,
                           data: dict[str, Any] | None = None,
                           timeout: Duration | None = None, v: str | None = None) -> Any:
        """Like :meth:`invoke`, for the function ``function_id`` (the id given to
        ``create_function``) of app ``app_id`` (default: this run's app)."""
        for arg, value in (("function_id", function_id), ("app_id", app_id)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise TypeError(f"step {step_id!r}: {arg} must be a non-empty string, "
                                f"got {value!r}")
        if function_id is None:
            raise TypeError(f"step {step_id!r}: function_id is required")
        return await self._invoke(step_id, f"{app_id or self._state.app_id}-{function_id}",
                                  data, timeout, v)

    async def _invoke(self, step_id: str, function_id: str, data: dict[str, Any] | None,
                      timeout: Duration | None, v: str | None = None) -> Any:
        if data is not None and not isinstance(data, dict):
            raise TypeError(f"step {step_id!r}: invoke data must be a dict or None, "
                            f"got {type(data).__name__}")
        if v is not None and not isinstance(v, str):
            raise TypeError(f"step {step_id!r}: v must be a string or None, "
                            f"got {type(v).__name__}")
        ms = _timeout_ms(step_id, timeout)
        step_id = self._enter(step_id)
        memo = self._memo(step_id)
        if memo is not _MISSING:
            return memo
        slot = self._begin_new(step_id)
        state = self._state
        now = state.now_ms()
        name = state.names[step_id]
        try:
            check_payload(data or {}, what=f"step {step_id!r} invoke data",
                          max_depth=state.settings.max_depth,
                          max_bytes=state.settings.max_event_bytes)
        except PayloadError as exc:
            # The same data would fail the same way on a retry.
            self._finish(slot, records.Outcome(
                op=records.STEP_FAILED, step_id=step_id, name=name, retriable=False,
                error=_outcomes.error_named("InvokeDataError", str(exc)),
                started_at=now, ended_at=now,
            ))
        self._finish(slot, records.Outcome(
            op=records.STEP_INVOKE, step_id=step_id, name=name,
            until_ms=None if ms is None else now + ms,
            invoke={"function_id": function_id, "data": data or {},
                    **({"v": v} if v is not None else {})},
        ))

    async def parallel(
        self, callables: Iterable[Callable[[], Awaitable[Any]] | Awaitable[Any]],
        parallel_mode: ParallelMode | None = None,
    ) -> Any:
        """A synonym of ``ctx.group.parallel`` (:meth:`sdk.Group.parallel`): run
        several lines of steps concurrently; by default return their results in order."""
        from sdk._group import ParallelMode, run_parallel  # imports this module
        return await run_parallel(self._state, callables,
                                  ParallelMode.WAIT if parallel_mode is None else parallel_mode)


async def _call(handler: Callable[..., Any], args: tuple[Any, ...],
                executor: Executor | None) -> Any:
    if inspect.iscoroutinefunction(handler):
        return await handler(*args)
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    value = await loop.run_in_executor(executor, lambda: ctx.run(handler, *args))
    if inspect.isawaitable(value):
        # A sync callable that returns a coroutine (a lambda around an async call).
        value = await value
    return value


def _timeout_ms(step_id: str, timeout: Duration | None) -> int | None:
    """A step's timeout in ms (None stays None); it must be more than 0."""
    if timeout is None:
        return None
    ms = duration_ms(timeout)
    if ms <= 0:
        raise ValueError(f"step {step_id!r}: timeout must be more than 0, got {timeout!r}")
    return ms


def _id_time(run_id: str) -> int:
    """The time part for ids derived from ``run_id``: fixed for the run, so derived ids
    come out the same on every execution."""
    try:
        return ulid_ms(run_id) if len(run_id) == 26 else 0
    except ValueError:
        return 0


def start_line() -> contextvars.Context:
    """A context whose line of control is fresh: run the function body in it."""
    ctx = contextvars.copy_context()
    ctx.run(_line.set, Line())
    ctx.run(_in_step.set, None)
    return ctx
