"""The middleware hooks of one execution, in Inngest's order (see :mod:`sdk._middleware`):
called by :func:`sdk._execution.execute` and by ``step.run``/``step.send_event``."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from sdk import _outcomes
from sdk._errors import StepError
from sdk._events import Event
from sdk._middleware import (
    EMPTY,
    Manager,
    SendEventsResult,
    StepMemos,
    TransformOutputResult,
    TransformOutputStepInfo,
    copied,
)
from sdk._step import Interrupt
from topics import records
from topics.settings import Settings

if TYPE_CHECKING:
    from sdk._context import Context
    from sdk._execution import ExecutionResult
    from sdk._function import Function
    from sdk._step import ExecutionState


class HookFailed(Interrupt):
    """A hook raised inside the function body (memoization hooks): stops the body like
    a step interrupt, so user code cannot catch it; the execution fails with the
    hook's exception."""


class ExecutionHooks:
    """The hooks of one execution, in Inngest's order (see the module docstring)."""

    def __init__(self, manager: Manager, error: Exception | None = None) -> None:
        self.manager = manager
        # The first hook failure: the execution fails with it.
        self.error = error
        # What the function body raised, for transform_output of its failure.
        self.function_error: Exception | None = None
        # Set once after_memoization and before_execution are done (or failed); parallel
        # lines reaching new code meanwhile wait for it.
        self._started: asyncio.Event | None = None

    @classmethod
    def create(cls, function: Function, task: records.Task) -> ExecutionHooks | None:
        """The client's then the function's middleware for ``task``, or None."""
        client = function.client
        factories = (*(client.middleware if client is not None else ()), *function.middleware)
        try:
            manager = Manager.create(client, tuple(factories), task)
        except Exception as exc:  # a middleware's constructor failed
            return cls(Manager([]), exc)
        return None if manager is None else cls(manager)

    async def begin(self, ctx: Context, function: Function, state: ExecutionState) -> bool:
        """transform_input, before_memoization (and the start of execution if nothing
        is memoized); False if a hook failed (the body must not run)."""
        if self.error is not None:
            return False
        try:
            memos = StepMemos.from_steps(state.steps)
            await self.manager.call("transform_input", ctx, function, memos)
            state.steps = memos.to_steps()
            await self.manager.call("before_memoization")
            if not state.steps:
                await self._start_execution()
        except Exception as exc:
            self.error = exc
            return False
        return True

    async def step(self, state: ExecutionState, step_id: str) -> None:
        """Called by a step before it looks up its memo: past the last memoized step,
        or at a new one, new code starts (after_memoization, before_execution)."""
        if self._started is None:
            if step_id in state.steps:
                seen = len(state.visited) + (step_id not in state.visited)
                if seen < len(state.steps):
                    return
            try:
                await self._start_execution()
            except Exception as exc:
                self.error = exc
        await self._started.wait()  # type: ignore[union-attr]
        if self.error is not None:
            raise HookFailed() from self.error

    async def before_send(self, state: ExecutionState, slot: int, step_id: str, name: str,
                          events: Event | list[Event]) -> list[Event]:
        """before_send_events inside the new send_event step ``step_id`` (in ``slot``):
        the events to send; a failing hook fails the step, retriable, as in Inngest."""
        batch = copied(events)
        try:
            await self.manager.call("before_send_events", batch)
        except Exception as exc:
            now = state.now_ms()
            state.slots[slot] = _outcomes.step_failed(step_id, name, exc, now_ms=now,
                                                      started_at=now)
            raise Interrupt() from exc
        return batch

    async def _start_execution(self) -> None:
        self._started = asyncio.Event()
        try:
            await self.manager.call("after_memoization")
            await self.manager.call("before_execution")
        finally:
            self._started.set()

    async def body_ended(self, error: Exception | None) -> None:
        """after_execution (starting execution first if the body never went past its
        memoized steps, so the two always pair up); ``error`` is what the body raised."""
        self.function_error = error
        if self.error is not None:
            return
        try:
            if self._started is None:
                await self._start_execution()
            await self.manager.call("after_execution")
        except Exception as exc:
            self.error = exc

    async def finish(self, result: ExecutionResult, *, settings: Settings,
                     now_ms: int) -> ExecutionResult:
        """after_send_events for the events of send_event steps, transform_output per
        outcome, then before_response; a hook's failure fails the execution."""
        from sdk._execution import ExecutionResult

        function_error = self.function_error
        if self.error is not None:
            result = ExecutionResult([_outcomes.function_failed(self.error, now_ms=now_ms)])
            function_error = self.error
        try:
            result = await self._after_sends(result, now_ms)
            outcomes = [await self._transform(o, function_error, settings)
                        for o in result.outcomes]
            await self.manager.call("before_response")
        except Exception as exc:
            return ExecutionResult([_outcomes.function_failed(exc, now_ms=now_ms)])
        return ExecutionResult(outcomes, result.sends)

    async def _after_sends(self, result: ExecutionResult, now_ms: int) -> ExecutionResult:
        """after_send_events per send_event step, with the ids handed for delivery; a
        failing hook fails that step (retriable), as it would inside Inngest's step."""
        from sdk._execution import ExecutionResult

        failed: dict[str, Exception] = {}
        for step_id, events in result.sends.items():
            try:
                await self.manager.call("after_send_events",
                                        SendEventsResult([e.id for e in events]))
            except Exception as exc:
                failed[step_id] = exc
        if not failed:
            return result
        outcomes = [_outcomes.step_failed(o.step_id, o.name or "", failed[o.step_id],
                                          now_ms=now_ms, started_at=o.started_at)
                    if o.step_id in failed else o for o in result.outcomes]
        return ExecutionResult(outcomes, {k: v for k, v in result.sends.items()
                                          if k not in failed})

    async def _transform(self, o: records.Outcome, function_error: BaseException | None,
                         settings: Settings) -> records.Outcome:
        has_output = o.op in (records.STEP_COMPLETED, records.FUNCTION_COMPLETED)
        error: Exception | None = None
        if o.error is not None:
            if (o.op == records.FUNCTION_FAILED and isinstance(function_error, Exception)):
                error = function_error
            else:
                error = _wire_error(o)
        opts = _step_opts(o)
        result = TransformOutputResult(
            error=error, output=o.output if has_output else EMPTY,
            step=None if o.step_id is None else TransformOutputStepInfo(
                id=o.step_id, op=o.op, opts=opts))
        original_output = result.output
        await self.manager.call("transform_output", result)
        changed = o
        if result.error is not error and result.error is not None:
            changed = dataclasses.replace(changed, error=_outcomes.error_of(result.error))
        if has_output and result.output is not original_output:
            what = (f"step {o.step_id!r} output" if o.step_id is not None
                    else "function output")
            problem = _outcomes.output_error(result.output, what + " (after middleware)",
                                             settings)
            if problem is not None:
                op = records.STEP_FAILED if o.step_id is not None else records.FUNCTION_FAILED
                return dataclasses.replace(changed, op=op, output=None, error=problem,
                                           retriable=False)
            changed = dataclasses.replace(changed, output=result.output)
        if o.invoke is not None and opts is not None:
            payload = opts.get("payload")
            data = payload.get("data") if isinstance(payload, dict) else None
            if isinstance(data, dict) and data is not o.invoke.get("data"):
                changed = dataclasses.replace(changed, invoke={**o.invoke, "data": data})
        return changed


def _wire_error(o: records.Outcome) -> StepError:
    err = o.error or {}
    stack = err.get("stack")
    return StepError(str(err.get("message", "")), name=str(err.get("name") or "Error"),
                     stack=stack if isinstance(stack, str) else None, step_id=o.step_id)


def _step_opts(o: records.Outcome) -> dict[str, Any] | None:
    if o.invoke is not None:
        return {"function_id": o.invoke.get("function_id"),
                "payload": {"data": o.invoke.get("data")}}
    if o.wait is not None:
        return dict(o.wait)
    return None
