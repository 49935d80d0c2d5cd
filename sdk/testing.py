"""Run a function in a test, with no broker and no engine.

    result = sdk.testing.trigger(process_order, sdk.Event(name="shop/order.created",
                                                          data={"order_id": 7}),
                                 step_stubs={"charge": {"ok": True}})
    assert result.status == "completed"
    assert result.step("charge").args == (7,)

:func:`trigger` does what the engine does with a run, in memory: it executes the function
(the worker's own :func:`~sdk._execution.execute`), records each pass's outcomes in the
run's memo and executes it again, until the function completes or fails for good.
Failed steps and functions are retried per the function's ``retries`` (a
:class:`~sdk.NonRetriableError` stops at once); sleeps advance a fake clock instead of
waiting; ``wait_for_event`` and ``invoke`` are resolved by ``step_stubs``. Every step is
kept with what it was called with (``step.run``'s handler arguments, ``send_event``'s
events, ``invoke``'s function and data) and its outcome.

``step_stubs`` maps a step name (the id given to ``ctx.step.*``: a stub for every call
of it) or a step's id ("charge:1", its second call) to a stub:

- ``step.run``: the value the step returns instead of calling its handler; an exception
  instance, raised by the step (and retried as a real failure would be); or a callable,
  called instead of the handler with the handler's arguments, once per attempt.
- ``wait_for_event``: the :class:`~sdk.Event` that arrives, or None for a timeout.
  Without a stub the wait times out.
- ``invoke`` / ``invoke_by_id``: the child's output; an exception instance for a child
  that failed (the step raises :class:`~sdk.StepError` with its name and message); or a
  callable, called with the invoke's data. An invoke without a stub raises
  :class:`UnstubbedStepError`.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdk import _outcomes
from sdk._durations import wall_ms
from sdk._events import Event, as_list, to_record
from sdk._execution import execute
from sdk._function import Function
from sdk._step import Step, _in_step
from topics import records
from topics.ids import new_ulid
from topics.settings import Settings

__all__ = ["ErrorInfo", "RunResult", "StepRecord", "UnstubbedStepError", "trigger",
           "trigger_async"]

_NO_STUB: Any = object()
_PAUSES = (records.STEP_SLEEP, records.STEP_WAIT, records.STEP_INVOKE)

# A run that keeps meeting new steps past this is taken for a loop in the function.
MAX_PASSES = 10_000


class UnstubbedStepError(LookupError):
    """A step needs something only a real engine has (an invoked function's output)."""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as the engine records it."""

    name: str
    message: str
    stack: str
    # What kind of failure (topics/error_codes.py): "step_errored", "non_retriable_error"...
    code: str = ""

    @staticmethod
    def of(wire: Any) -> ErrorInfo:
        wire = wire if isinstance(wire, dict) else {}
        return ErrorInfo(str(wire.get("name") or "Error"), str(wire.get("message") or ""),
                         str(wire.get("stack") or ""), str(wire.get("code") or ""))


@dataclass(slots=True)
class StepRecord:
    """One step of the run, in the order it was first met.

    ``kind`` is "run", "send_event", "sleep", "wait_for_event" or "invoke". ``args`` is
    what the step was called with: the handler's arguments (a tuple) for "run", the
    events for "send_event", ``{"until_ms"}`` for "sleep", ``{"event", "match",
    "if_exp", "timeout_ms"}`` for "wait_for_event", ``{"function_id", "data"}`` for
    "invoke". ``attempts`` counts the runs of a "run" step's handler (retries included).
    """

    id: str
    name: str
    kind: str
    args: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    attempts: int = 0
    stubbed: bool = False


@dataclass(slots=True)
class RunResult:
    """How the run of ``function_id`` ended: ``status`` is "completed" or "failed", with
    ``output`` or ``error``. ``attempts`` counts the function's attempts (1 without
    retries)."""

    function_id: str
    run_id: str
    status: str
    output: Any = None
    error: ErrorInfo | None = None
    attempts: int = 1
    steps: list[StepRecord] = field(default_factory=list)
    # The fake clock when the run ended (ms): sleeps and timeouts moved it on.
    ended_at_ms: int = 0
    # The trigger event(s), as the function saw them (ids and ts filled in).
    events: list[Event] = field(default_factory=list)

    def step(self, step_id: str) -> StepRecord:
        """The step with id ``step_id`` ("x", or "x:1" for its second call)."""
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(f"no step {step_id!r} in this run; its steps: "
                       f"{[s.id for s in self.steps]}")

    @property
    def sent_events(self) -> list[Event]:
        """Every event the run's ``send_event`` steps sent, in order."""
        return [e for s in self.steps if s.kind == "send_event" for e in s.args]

    def failure_event(self) -> Event:
        """The ``stepstream/function.failed`` event the engine sends for this failed run:
        ``trigger(fn.on_failure, result.failure_event())`` tests a failure handler."""
        if self.status != "failed" or self.error is None:
            raise ValueError(f"run {self.run_id} did not fail (status {self.status!r})")
        first = self.events[0]
        return Event(name=records.FUNCTION_FAILED_EVENT, data={
            "function_id": self.function_id, "run_id": self.run_id, "status": "failed",
            "event": {"name": first.name, "data": first.data, "id": first.id,
                      "ts": first.ts},
            "error": {"name": self.error.name, "message": self.error.message,
                      "stack": self.error.stack}})


def trigger(fn: Function, event: Event | list[Event], *,
            step_stubs: Mapping[str, Any] | None = None, now_ms: int | None = None,
            run_id: str | None = None, settings: Settings | None = None) -> RunResult:
    """Run ``fn`` for ``event`` (a list: a batch) to its end; see the module docs.

    ``now_ms`` starts the fake clock (default: now); ``run_id`` fixes the run's id
    (default: a new one); ``settings`` sets the limits outputs are checked against.
    Blocks; inside a running event loop, ``await trigger_async(...)`` instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(trigger_async(fn, event, step_stubs=step_stubs, now_ms=now_ms,
                                         run_id=run_id, settings=settings))
    raise RuntimeError("sdk.testing.trigger blocks: in an async test, "
                       "await sdk.testing.trigger_async(...)")


async def trigger_async(fn: Function, event: Event | list[Event], *,
                        step_stubs: Mapping[str, Any] | None = None,
                        now_ms: int | None = None, run_id: str | None = None,
                        settings: Settings | None = None) -> RunResult:
    """:func:`trigger`, awaited."""
    if not isinstance(fn, Function):
        raise TypeError("fn must be an sdk.Function (what create_function returns), "
                        f"got {type(fn).__name__}")
    stubs = dict(step_stubs or {})
    for key in stubs:
        if not isinstance(key, str) or not key:
            raise TypeError(f"step_stubs keys must be step names (strings), got {key!r}")
    run = _Run(fn, event, stubs, wall_ms() if now_ms is None else now_ms, run_id,
               settings or Settings())
    token = _harness.set(run)
    try:
        return await run.to_the_end()
    finally:
        _harness.reset(token)


class _Run:
    """The engine's part, in memory: the run's memo, attempts and fake clock."""

    def __init__(self, fn: Function, event: Event | list[Event], stubs: dict[str, Any],
                 now: int, run_id: str | None, settings: Settings) -> None:
        events = as_list(event)
        if not events:
            raise ValueError("event: give at least one sdk.Event")
        self.fn = fn
        self.stubs = stubs
        self.clock = now
        self.settings = settings
        self.run_id = run_id or new_ulid(now)
        self.wire = [_wire(to_record(e, default_id=new_ulid(now), now_ms=now,
                                     settings=settings)) for e in events]
        self.memo: dict[str, dict[str, Any]] = {}
        self.step_attempts: dict[str, int] = {}
        self.fn_attempt = 0
        self.steps: dict[str, StepRecord] = {}
        # step id -> the arguments its handler was last called with
        self.calls: dict[str, tuple[Any, ...]] = {}
        self.send_names: set[str] = set()

    def stub(self, step_id: str, name: str) -> Any:
        """The stub for step ``step_id``: given for that id ("w:1"), else for its name."""
        return self.stubs.get(step_id, self.stubs.get(name, _NO_STUB))

    async def to_the_end(self) -> RunResult:
        for seq in range(1, MAX_PASSES + 1):
            task = records.Task(
                run_id=self.run_id, fn_id=self.fn.id, app_id=self.fn.config.app_id,
                seq=seq, partition_key=self.run_id, event=self.wire[0],
                events=self.wire if len(self.wire) > 1 else [],
                attempt=max(self.fn_attempt, *self.step_attempts.values(), 0),
                steps=dict(self.memo), step_attempts=dict(self.step_attempts), ts=self.clock)
            result = await execute(self.fn, task, settings=self.settings,
                                   now_ms=lambda: self.clock, step_type=_StubbedStep)
            for outcome in result.outcomes:
                if outcome.op == records.FUNCTION_COMPLETED:
                    return self._end("completed", output=outcome.output)
                if outcome.op == records.FUNCTION_FAILED:
                    if outcome.retriable and self.fn_attempt < self.fn.config.retries:
                        self.fn_attempt += 1
                        self._after(outcome.retry_after_ms)
                        continue
                    return self._end("failed", error=ErrorInfo.of(outcome.error))
                self._apply(outcome, result.sends.get(outcome.step_id or ""))
            # As the engine records them: a pass's sleeps, waits and invokes end after
            # its other steps (a RACE's winner is the line recorded first).
            for o in result.outcomes:
                if o.op in _PAUSES and o.step_id in self.memo:
                    self.memo[o.step_id] = self.memo.pop(o.step_id)
        raise RuntimeError(f"function {self.fn.fn_id!r} met new steps in {MAX_PASSES} passes "
                           "without ending: does it loop over steps without end?")

    def _end(self, status: str, *, output: Any = None, error: ErrorInfo | None = None
             ) -> RunResult:
        return RunResult(self.fn.id, self.run_id, status, output, error, self.fn_attempt + 1,
                         list(self.steps.values()), self.clock,
                         [Event.from_wire(w) for w in self.wire])

    def _after(self, due_ms: int | None) -> None:
        if due_ms is not None:
            self.clock = max(self.clock, due_ms)

    def _record(self, o: records.Outcome, kind: str, args: Any) -> StepRecord:
        assert o.step_id is not None
        step = self.steps.get(o.step_id)
        if step is None:
            step = self.steps[o.step_id] = StepRecord(o.step_id, o.name or o.step_id, kind)
        step.args = args
        return step

    def _settle(self, step: StepRecord, *, output: Any = None,
                error: dict[str, Any] | None = None) -> None:
        self.step_attempts.pop(step.id, None)
        if error is None:
            self.memo[step.id] = {"data": output}
        else:
            self.memo[step.id] = {"error": error}
            step.error = ErrorInfo.of(error)

    def _apply(self, o: records.Outcome, sent: list[records.Event] | None) -> None:
        """Take one step outcome into the run as the engine's fold would."""
        assert o.step_id is not None
        name = o.name or o.step_id
        if o.op in (records.STEP_COMPLETED, records.STEP_FAILED):
            if sent is not None or name in self.send_names:
                step = self._record(o, "send_event",
                                    [Event.from_wire(_wire(e)) for e in sent or []])
            else:
                step = self._record(o, "run", self.calls.get(o.step_id, ()))
                step.stubbed = self.stub(o.step_id, name) is not _NO_STUB
                step.attempts += 1
            if o.op == records.STEP_COMPLETED:
                step.output, step.error = o.output, None
                self._settle(step, output=o.output)
            elif o.retriable and step.attempts <= self.fn.config.retries:
                step.error = ErrorInfo.of(o.error)
                self.step_attempts[o.step_id] = step.attempts
                self._after(o.retry_after_ms)
            else:
                self._settle(step, error=o.error)
        elif o.op == records.STEP_SLEEP:
            self._record(o, "sleep", {"until_ms": o.until_ms})
            self._after(o.until_ms)
            self._settle(self.steps[o.step_id])
        elif o.op == records.STEP_WAIT:
            self._wait(o, name)
        elif o.op == records.STEP_INVOKE:
            self._invoke(o, name)

    def _wait(self, o: records.Outcome, name: str) -> None:
        wait = dict(o.wait or {})
        wait["timeout_ms"] = (o.until_ms or self.clock) - self.clock
        step = self._record(o, "wait_for_event", wait)
        stub = self.stub(step.id, name)
        if stub is None or stub is _NO_STUB:
            self._after(o.until_ms)  # no event came: the wait timed out
            self._settle(step)
            return
        if not isinstance(stub, Event):
            raise TypeError(f"step_stubs[{name!r}]: a wait_for_event stub is the sdk.Event "
                            f"that arrives, or None for a timeout; got {type(stub).__name__}")
        arrived = _wire(to_record(stub, default_id=new_ulid(self.clock), now_ms=self.clock,
                                  settings=self.settings))
        step.stubbed, step.output = True, Event.from_wire(arrived)
        self._settle(step, output=arrived)

    def _invoke(self, o: records.Outcome, name: str) -> None:
        invoke = dict(o.invoke or {})
        step = self._record(o, "invoke", invoke)
        stub = self.stub(step.id, name)
        if stub is _NO_STUB:
            raise UnstubbedStepError(
                f"step {name!r} invokes {invoke.get('function_id')!r}, which runs only on "
                f"an engine: stub its output, step_stubs={{{name!r}: ...}}")
        step.stubbed = True
        try:
            output = stub(copy.deepcopy(invoke.get("data"))) if callable(stub) else stub
            if isinstance(output, BaseException):
                raise output
        except Exception as exc:
            self._settle(step, error=_outcomes.error_of(exc))
            return
        step.output = copy.deepcopy(output)
        self._settle(step, output=step.output)


def _wire(e: records.Event) -> dict[str, Any]:
    return {"name": e.name, "data": e.data, "id": e.id, "ts": e.ts}


# The run being triggered, for _StubbedStep (set around execute, so the body and its
# steps, in any thread, see it).
_harness: contextvars.ContextVar[_Run] = contextvars.ContextVar("stepstream_test_run")


class _StubbedStep(Step):
    """``ctx.step`` under :func:`trigger`: ``step.run`` calls the stub for its name, if
    any, instead of the handler, and every handler call's arguments are kept."""

    async def run(self, step_id: str, handler: Callable[..., Any], *args: Any,
                  **options: Any) -> Any:
        run = _harness.get()
        return await super().run(step_id, _recording(handler, step_id, run), *args, **options)

    async def send_event(self, step_id: str, events: Event | list[Event]) -> list[str]:
        # Names the step's kind when it fails (bad events): only a completed one's
        # events come back with the outcome.
        _harness.get().send_names.add(step_id)
        return await super().send_event(step_id, events)


def _stub_handler(stub: Any) -> Callable[..., Any]:
    if isinstance(stub, BaseException):
        def fail(*_args: Any) -> Any:
            raise stub
        return fail
    if callable(stub):
        return stub
    return lambda *_args: copy.deepcopy(stub)


def _recording(handler: Callable[..., Any], name: str, run: _Run) -> Callable[..., Any]:
    """``handler``, or the stub for its step, keeping the arguments under the step's id
    (the id is known once the step runs: ``_in_step`` is set while a handler runs)."""
    def chosen(args: tuple[Any, ...]) -> Callable[..., Any]:
        step_id = _in_step.get() or name
        run.calls[step_id] = args
        stub = run.stub(step_id, name)
        return handler if stub is _NO_STUB else _stub_handler(stub)

    if inspect.iscoroutinefunction(handler):
        async def call_async(*args: Any) -> Any:
            result = chosen(args)(*args)
            return await result if inspect.isawaitable(result) else result
        return call_async

    def call(*args: Any) -> Any:
        return chosen(args)(*args)

    return call
