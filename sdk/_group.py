"""``ctx.group``: lines of steps run side by side, as Inngest's ``ctx.group.parallel``.

Each callable given to :meth:`Group.parallel` is a line of control (see
:mod:`sdk._step`): it runs as its own asyncio task and stops at its first new step, so
the new steps of every line are executed, or planned, together in one execution. Any
step may stand in a line, ``step.invoke`` and ``step.wait_for_event`` included: the
engine keeps each pause of a run on its own and hands the run over whenever one of them
resolves (engine/fold/pending.py).

``ParallelMode.WAIT`` returns every line's result, in order, once all have finished.
``ParallelMode.RACE`` returns the result of the line that finished first *as recorded*:
the one whose last step's outcome comes first in the run's history (lines without
steps first of all, in the order given), so every replay picks the same winner
whatever order a worker happens to finish them in. To find it, the lines are first
replayed over the recorded steps only; if one finishes there, it wins and no new step
of the others is started. Otherwise they run as in WAIT mode, until one finishes.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, overload

from sdk._step import ExecutionState, Interrupt, Line, NestedStepError, current_line

Lines = Iterable[Callable[[], Awaitable[Any]] | Awaitable[Any]]


class ParallelMode(enum.Enum):
    """How :meth:`Group.parallel` ends: ``WAIT`` for every line (a tuple of their
    results), ``RACE`` for the first recorded to finish (its result)."""

    WAIT = "wait"
    RACE = "race"


class Group:
    """The group API of one execution (``ctx.group``)."""

    def __init__(self, state: ExecutionState) -> None:
        self._state = state

    @overload
    async def parallel(self, callables: Lines,
                       parallel_mode: Literal[ParallelMode.WAIT] = ...) -> tuple[Any, ...]: ...

    @overload
    async def parallel(self, callables: Lines,
                       parallel_mode: Literal[ParallelMode.RACE]) -> Any: ...

    @overload
    async def parallel(self, callables: Lines, parallel_mode: ParallelMode) -> Any: ...

    async def parallel(self, callables: Lines,
                       parallel_mode: ParallelMode = ParallelMode.WAIT) -> Any:
        """Run several lines of steps concurrently.

        Each item is a zero-argument callable returning an awaitable (typically
        ``lambda: ctx.step.run(...)``, or an async function calling several steps).
        With ``ParallelMode.WAIT`` (the default) this returns their results in order
        once every line has finished; a line that raised (a
        :class:`~sdk.StepError` from a failed step or invoke) raises here, the first
        in order. With ``ParallelMode.RACE`` it returns the result of the first line
        to finish as recorded in the run's history, or raises its error; the other
        lines' steps still pending are left (cleared when the run ends). A RACE first
        replays its lines over recorded steps only, so code outside steps in them may
        run twice in one execution (as all such code runs again on every replay).
        """
        return await run_parallel(self._state, callables, parallel_mode)


async def run_parallel(state: ExecutionState, callables: Lines, mode: ParallelMode) -> Any:
    """:meth:`Group.parallel` (and ``ctx.step.parallel``, its synonym)."""
    items, parent = _begin(callables, mode)
    if mode is ParallelMode.RACE:
        # Replay first, starting nothing: a line finished over recorded steps wins.
        saved = state.mark()
        won = _winner(parent, *await _run_lines(items, probe=True))
        if won is not None:
            return won.result()
        state.reset(saved)
    return _end(parent, mode, *await _run_lines(items, probe=False))


def run_parallel_sync(state: ExecutionState, callables: Iterable[Callable[[], Any]],
                      mode: ParallelMode) -> Any:
    """``parallel`` of a sync function (sdk/_sync.py): the same, with the lines run one
    after the other in the function's thread, each in a line of control of its own, so
    their new steps' handlers do not overlap in time (they are reported together all
    the same)."""
    items, parent = _begin(callables, mode, sync=True)
    if mode is ParallelMode.RACE:
        saved = state.mark()
        won = _winner(parent, *_run_lines_sync(items, probe=True))
        if won is not None:
            return won.result()
        state.reset(saved)
    return _end(parent, mode, *_run_lines_sync(items, probe=False))


def _begin(callables: Lines, mode: ParallelMode, sync: bool = False) -> tuple[list[Any], Line]:
    """Check the arguments; the lines and the line of control they branch from."""
    if not isinstance(mode, ParallelMode):
        raise TypeError("parallel_mode must be sdk.ParallelMode.WAIT or "
                        f"sdk.ParallelMode.RACE, got {mode!r}")
    items = list(callables)
    for item in items:
        if sync and not callable(item):
            raise TypeError("parallel takes callables (lambda: ctx.step.run(...)), "
                            f"got {type(item).__name__}")
        if not callable(item) and not inspect.isawaitable(item):
            raise TypeError("parallel takes callables returning awaitables, "
                            f"got {type(item).__name__}")
    if mode is ParallelMode.RACE and not items:
        raise ValueError("parallel with ParallelMode.RACE needs at least one line")
    if mode is ParallelMode.RACE and not all(callable(i) for i in items):
        raise TypeError("parallel with ParallelMode.RACE takes callables (it may run a "
                        "line twice in one execution), not awaitables")
    parent = current_line()
    if parent.stopped:
        raise Interrupt()
    return items, parent


def _end(parent: Line, mode: ParallelMode, lines: list[Line], results: list[Any]) -> Any:
    """What the group returns (or raises) once its lines ran to their first new step."""
    if any(isinstance(r, Interrupt) for r in results):
        parent.stopped = True
        raise Interrupt()
    if mode is ParallelMode.RACE:
        won = _winner(parent, lines, results)
        assert won is not None  # every line finished
        return won.result()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    parent.last = max([parent.last, *(line.last for line in lines)])
    return tuple(results)


async def _run_lines(items: list[Any], probe: bool) -> tuple[list[Line], list[Any]]:
    lines = [Line() for _ in items]
    tasks = [asyncio.ensure_future(_run_line(item, line, probe))
             for item, line in zip(items, lines, strict=True)]
    return lines, await asyncio.gather(*tasks, return_exceptions=True)


async def _run_line(item: Callable[[], Awaitable[Any]] | Awaitable[Any], line: Line,
                    probe: bool) -> Any:
    # Runs inside its own task, so this only affects this line.
    Line.enter(line, probing=probe)
    result = item() if callable(item) else item
    if inspect.isawaitable(result):
        result = await result
    return result


def _run_lines_sync(items: list[Callable[[], Any]], probe: bool
                    ) -> tuple[list[Line], list[Any]]:
    lines = [Line() for _ in items]
    results: list[Any] = []
    for item, line in zip(items, lines, strict=True):
        context = contextvars.copy_context()
        context.run(Line.enter, line, probe)
        try:
            result = context.run(item)
        except (Exception, Interrupt, NestedStepError) as exc:
            results.append(exc)
            continue
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError("in a sync function, parallel takes sync callables "
                            "(lambda: ctx.step.run(...)), not ones returning awaitables")
        results.append(result)
    return lines, results


def _winner(parent: Line, lines: list[Line], results: list[Any]) -> _Won | None:
    """The result (or error) of the line whose last step was recorded first, among
    those that finished; None if none did. Anything but a line's own error
    (an Interrupt, a nested step) propagates."""
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, Exception | Interrupt):
            raise r
    done = [i for i, r in enumerate(results) if not isinstance(r, Interrupt)]
    if not done:
        return None
    first = min(done, key=lambda i: (lines[i].last, i))
    parent.last = max(parent.last, lines[first].last)
    return _Won(results[first])


class _Won:
    """A RACE's winning line: its value, or the error it raised."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value
