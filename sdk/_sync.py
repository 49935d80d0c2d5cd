"""Sync functions: a ``def`` handler gets :class:`~sdk.ContextSync`, whose steps block.

The body runs in a thread; each ``ctx.step.*`` call is handed to the event loop as the
call of the async :class:`~sdk.Step` and the thread waits for it. So one step machinery
serves both kinds of function (memo, ids, interrupts and outcomes are the async ones),
and the execution's state only ever changes on the loop thread, one call at a time. The
:class:`~sdk._step.Interrupt` that ends a pass at a new step re-raises in the thread and
leaves the body the same way it leaves an async one: as a BaseException, past any
``except Exception`` of the function.

The bodies have a thread pool of their own, not the one step handlers run in: a body
waits for its step handlers, so bodies holding every thread of that pool would wait
forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from sdk._context import Context, ContextSync
from sdk._durations import Duration
from sdk._events import Event
from sdk._function import Function
from sdk._group import ParallelMode, run_parallel_sync
from sdk._step import Interrupt, Step

T = TypeVar("T")

# Threads are started on demand and reused; the bound only stops a runaway. A worker
# runs at most `concurrency` bodies at once (one per task it holds).
_MAX_BODIES = 1024
_bodies: concurrent.futures.ThreadPoolExecutor | None = None
# How often a body waiting for a step checks that the loop is still there.
_CHECK_LOOP_S = 1.0
_bodies_lock = threading.Lock()


def _body_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _bodies
    with _bodies_lock:
        if _bodies is None:
            _bodies = concurrent.futures.ThreadPoolExecutor(
                max_workers=_MAX_BODIES, thread_name_prefix="stepstream-sync-fn")
        return _bodies


async def run_sync(handler: Callable[..., Any], ctx: Context) -> Any:
    """Call the sync ``handler`` with the :class:`~sdk.ContextSync` of ``ctx`` in a body
    thread, in the current line of control, and return what it returns."""
    loop = asyncio.get_running_loop()
    step = StepSync(ctx.step, loop)
    sync_ctx = ContextSync.of(ctx, step, GroupSync(step))
    # The thread runs in a copy of this task's context: the same line of control.
    context = contextvars.copy_context()
    try:
        return await loop.run_in_executor(_body_pool(), context.run, handler, sync_ctx)
    except asyncio.CancelledError:
        # The thread cannot be stopped from here; its next step call ends it instead.
        step.cancelled = True
        raise


class StepSync:
    """The step API of a sync function (``ctx.step`` in a ``def`` handler).

    Each method is its :class:`~sdk.Step` namesake, blocking until it returns: same
    arguments, same memoization, same errors. Step handlers are sync callables too.
    ``parallel`` takes sync callables (``lambda: ctx.step.run(...)``) and runs their
    lines one after the other in the function's thread; the new steps they meet are
    still reported together.
    """

    def __init__(self, step: Step, loop: asyncio.AbstractEventLoop) -> None:
        self._step = step
        self._loop = loop
        self._loop_thread = threading.get_ident()
        # Set when the execution was cancelled (worker shutdown): no step starts after.
        self.cancelled = False

    def _wait(self, call: Coroutine[Any, Any, T]) -> T:
        if threading.get_ident() == self._loop_thread:
            call.close()
            raise RuntimeError("the steps of a sync function block: call them from the "
                               "function's own thread, not from the event loop")
        if self.cancelled:
            call.close()
            raise Interrupt()
        try:
            future = asyncio.run_coroutine_threadsafe(call, self._loop)
        except RuntimeError:  # the loop is closed: the worker is gone, end the body
            call.close()
            raise Interrupt() from None
        while True:
            try:
                return future.result(timeout=_CHECK_LOOP_S)
            except concurrent.futures.CancelledError:
                # The worker cancelled the execution: stop the body, past `except Exception`.
                raise Interrupt() from None
            except TimeoutError:
                if future.done():
                    raise  # the step's own TimeoutError
                if self._loop.is_closed():
                    # Closed before it ran the call: nothing will ever answer.
                    if inspect.getcoroutinestate(call) == inspect.CORO_CREATED:
                        call.close()
                    raise Interrupt() from None

    def run(self, step_id: str, handler: Callable[..., T], *args: Any, **options: Any) -> T:
        """Run ``handler(*args)`` once as step ``step_id``; see :meth:`sdk.Step.run`
        (``options``: its keyword arguments)."""
        if inspect.iscoroutinefunction(handler):
            raise TypeError(f"step {step_id!r}: in a sync function, step handlers are sync "
                            "callables (def); make the function async def to await one")
        return self._wait(self._step.run(step_id, handler, *args, **options))

    def sleep(self, step_id: str, duration: Duration) -> None:
        """Pause the run for ``duration``; see :meth:`sdk.Step.sleep`."""
        self._wait(self._step.sleep(step_id, duration))

    def sleep_until(self, step_id: str, until: datetime.datetime | str) -> None:
        """Pause the run until ``until``; see :meth:`sdk.Step.sleep_until`."""
        self._wait(self._step.sleep_until(step_id, until))

    def send_event(self, step_id: str, events: Event | list[Event]) -> list[str]:
        """Send events once, as step ``step_id``; see :meth:`sdk.Step.send_event`."""
        return self._wait(self._step.send_event(step_id, events))

    def wait_for_event(self, step_id: str, *, event: str, timeout: Duration,
                       match: str | None = None, if_exp: str | None = None) -> Event | None:
        """Pause the run until an event arrives; see :meth:`sdk.Step.wait_for_event`."""
        return self._wait(self._step.wait_for_event(step_id, event=event, timeout=timeout,
                                                    match=match, if_exp=if_exp))

    def invoke(self, step_id: str, *, function: Function, data: dict[str, Any] | None = None,
               timeout: Duration | None = None, **options: Any) -> Any:
        """Run ``function`` as a child run; see :meth:`sdk.Step.invoke`."""
        return self._wait(self._step.invoke(step_id, function=function, data=data,
                                            timeout=timeout, **options))

    def invoke_by_id(self, step_id: str, *, function_id: str, app_id: str | None = None,
                     data: dict[str, Any] | None = None,
                     timeout: Duration | None = None, **options: Any) -> Any:
        """Run a function by id as a child run; see :meth:`sdk.Step.invoke_by_id`."""
        return self._wait(self._step.invoke_by_id(step_id, function_id=function_id,
                                                  app_id=app_id, data=data, timeout=timeout,
                                                  **options))

    def parallel(self, callables: Iterable[Callable[[], Any]],
                 parallel_mode: ParallelMode = ParallelMode.WAIT) -> Any:
        """Run several lines of steps; see :meth:`sdk.Group.parallel` (WAIT: their
        results in order; RACE: the first line finished as recorded).

        The lines run one after the other in this thread (each in a line of control of
        its own), so their new steps' handlers do not overlap in time; they are
        reported together all the same.
        """
        return run_parallel_sync(self._step._state, callables, parallel_mode)


class GroupSync:
    """``ctx.group`` of a sync function: :meth:`parallel` as :meth:`StepSync.parallel`."""

    def __init__(self, step: StepSync) -> None:
        self._step = step

    def parallel(self, callables: Iterable[Callable[[], Any]],
                 parallel_mode: ParallelMode = ParallelMode.WAIT) -> Any:
        """Run several lines of steps; see :meth:`StepSync.parallel`."""
        return self._step.parallel(callables, parallel_mode)
