"""A pass: one task executed ahead past its completed steps, without the engine.

After a step completes, the function is executed again at once with that step
memoized, instead of reporting and waiting for the engine's next task. One rule keeps
every completed step from running twice: before a new step has any effect (its handler
runs, or its events are delivered), the steps completed earlier in the pass are
recorded — produced to ``runs`` as a checkpoint (``OutcomesReported`` with ``more``)
and acknowledged by the broker. A step that needs the engine (a sleep, a wait, an
invoke, a failure to retry), the function's end, or the pass's budget ends the pass
with one ordinary report carrying the steps still unrecorded. The protocol, including
takeover and cancellation, is in docs/architecture.md ("Run-ahead").
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable

from sdk import _outcomes
from sdk._delivery import Delivery
from sdk._durations import wall_ms
from sdk._execution import ExecutionResult
from topics import records
from topics.catalog import Catalog
from topics.codec import encode
from topics.settings import Settings

# Step id plus name shorter than this leave room in the record envelope for the rest of a
# one-outcome report (run id, worker id, field names).
SHORT_IDS = 16 * 1024


class PassEnded(BaseException):
    """Raised inside the function by a checkpoint that did not record the steps before
    the next one: the pass ends there, and that next step never starts.

    A BaseException, like the step interrupt, so ``except Exception`` in user code
    does not swallow it.
    """


class _Flush(enum.Enum):
    RECORDED = "recorded"
    # A send_event step's events were not acknowledged: its outcome is now a retriable
    # failure the engine must schedule, so the pass cannot go on.
    ENDED = "ended"
    # The worker is stopping and the checkpoint was not delivered: the task is left
    # uncommitted for the next owner, who reads the checkpoints that were.
    ABANDONED = "abandoned"


class Pass:
    """The state of one pass over ``task``: the memo so far and the steps completed
    since the last checkpoint (``pending``).

    ``may_continue`` says whether the worker may still go on (it owns the task's
    partition and is not stopping); it is asked each time a step completes.
    """

    def __init__(self, task: records.Task, settings: Settings, catalog: Catalog,
                 delivery: Delivery, worker_id: str,
                 may_continue: Callable[[], bool]) -> None:
        self._task = task
        self._settings = settings
        self._catalog = catalog
        self._delivery = delivery
        self._worker_id = worker_id
        self._may_continue = may_continue
        self._memo = dict(task.steps)
        # One task object for every execution of the pass: its memo grows between them.
        self._view = dataclasses.replace(task, steps=self._memo)
        self._pending: list[records.Outcome] = []
        self._pending_sends: dict[str, list[records.Event]] = {}
        self._steps = 0
        self._started = time.monotonic()
        self.state: _Flush = _Flush.RECORDED
        self.checkpoints = 0

    @property
    def abandoned(self) -> bool:
        """The worker stopped before a checkpoint was delivered."""
        return self.state is _Flush.ABANDONED

    def view(self) -> records.Task:
        """The task as the next execution sees it: every step completed so far memoized."""
        return self._view

    async def checkpoint(self) -> None:
        """Record the pending steps before a new step's handler runs (awaited by
        ``step.run``; parallel lines share one checkpoint)."""
        if self.state is not _Flush.RECORDED:
            raise PassEnded()
        if self._pending and await self._flush() is not _Flush.RECORDED:
            raise PassEnded()

    async def go_on(self, result: ExecutionResult) -> bool:
        """Take ``result`` into the pass if the worker may execute again at once; False
        if the result ends the pass (then :meth:`finish` reports it)."""
        if (self.state is not _Flush.RECORDED or not result.outcomes
                or any(o.op != records.STEP_COMPLETED for o in result.outcomes)):
            return False
        if (self._steps + len(result.outcomes) >= self._settings.pass_max_steps
                or (time.monotonic() - self._started) * 1000 >= self._settings.pass_max_ms
                or not self._may_continue() or not self._fits(result.outcomes)):
            return False
        # Events to send are the new steps' effect: the earlier steps are recorded first.
        if (self._pending and (result.sends or not self._fits(self._pending + result.outcomes))
                and await self._flush() is not _Flush.RECORDED):
            return False
        self._pending.extend(result.outcomes)
        self._pending_sends.update(result.sends)
        for o in result.outcomes:
            assert o.step_id is not None
            self._memo[o.step_id] = {"data": o.output}
        self._steps += len(result.outcomes)
        return True

    async def finish(self, result: ExecutionResult) -> bool:
        """Deliver the pass's last report: the pending steps, then ``result``'s
        outcomes (dropped if the pass ended before them). False if the worker stopped
        before it was delivered."""
        if self.state is _Flush.ABANDONED:
            return False
        if self.state is _Flush.ENDED:
            result = ExecutionResult([], {})
        elif self._pending and (result.sends or self._pending_sends
                                or not self._fits(self._pending + result.outcomes)):
            # Pending sends go out with the checkpoint, before anything after them.
            state = await self._flush()
            if state is _Flush.ABANDONED:
                return False
            if state is _Flush.ENDED:
                result = ExecutionResult([], {})
        progress = result.progress  # step_events gives a new result without it
        result = await self._delivery.step_events(result)
        report = _outcomes.fit_report(
            self._report(self._pending + result.outcomes, more=False, progress=progress),
            self._settings.max_record_bytes)
        return await self._deliver(report, "report")

    # -- checkpoints -----------------------------------------------------------------

    async def _flush(self) -> _Flush:
        delivered = await self._delivery.step_events(
            ExecutionResult(self._pending, self._pending_sends))
        self._pending_sends = {}
        if any(o.op != records.STEP_COMPLETED for o in delivered.outcomes):
            self._pending = delivered.outcomes  # reported by finish, as the pass's end
            self.state = _Flush.ENDED
            return self.state
        if not await self._deliver(self._report(self._pending, more=True), "checkpoint"):
            self.state = _Flush.ABANDONED
            return self.state
        self._pending = []
        self.checkpoints += 1
        return _Flush.RECORDED

    def _report(self, outcomes: list[records.Outcome], *, more: bool,
                progress: bool = False) -> records.OutcomesReported:
        return records.OutcomesReported(run_id=self._task.run_id, task_seq=self._task.seq,
                                        outcomes=outcomes, worker=self._worker_id,
                                        ts=wall_ms(), more=more, progress=progress)

    def _fits(self, outcomes: list[records.Outcome]) -> bool:
        if len(outcomes) == 1 and len(outcomes[0].step_id or "") + len(
                outcomes[0].name or "") < SHORT_IDS:
            # One output is within max_step_output_bytes, which leaves a record's
            # envelope (64 KiB, topics.settings) for the rest: no need to encode it here.
            return True
        return len(encode(self._report(outcomes, more=True))) <= self._settings.max_record_bytes

    async def _deliver(self, report: records.OutcomesReported, what: str) -> bool:
        task = self._task
        return await self._delivery.until_delivered(
            self._catalog.runs, task.partition_key, encode(report),
            f"{what} for run {task.run_id} task {task.seq}")
