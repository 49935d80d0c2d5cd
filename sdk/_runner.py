"""Running one task: its function on the worker's loop (large outputs read back first),
executed again past each completed step while the pass lasts (:mod:`sdk._pass`), then
the events its steps send, then its report."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sdk import _outcomes, _refs
from sdk._delivery import Delivery
from sdk._durations import wall_ms
from sdk._execution import ExecutionResult, execute, function_not_found
from sdk._pass import Pass, PassEnded
from topics import records
from topics.catalog import Catalog
from topics.codec import encode
from topics.settings import Settings

if TYPE_CHECKING:
    from sdk._client import Client

log = logging.getLogger("stepstream.worker")


class TaskRunner:
    """Runs tasks of ``client``'s functions and reports their outcomes.

    ``spawn`` starts a side task the worker waits for on shutdown (``run.started``
    reports, which nothing awaits)."""

    def __init__(self, client: Client, settings: Settings, catalog: Catalog,
                 delivery: Delivery, refs: _refs.RefResolver, steps_pool: ThreadPoolExecutor,
                 worker_id: str, spawn: Callable[[Coroutine[Any, Any, Any]], None],
                 observe: Callable[[records.Task, list[records.Outcome]], None] = (
                     lambda _task, _outcomes: None)) -> None:
        self._client = client
        self._settings = settings
        self._catalog = catalog
        self._delivery = delivery
        self._refs = refs
        self._steps_pool = steps_pool
        self._worker_id = worker_id
        self._spawn = spawn
        # Sees every execution's outcomes (the worker's metrics and step spans).
        self._observe = observe

    async def run(self, task: records.Task,
                  may_continue: Callable[[], bool] = lambda: True) -> bool:
        """Run the task and deliver its report; False if the worker stopped first.

        The task is run ahead (:mod:`sdk._pass`): after each completed step the
        function is executed again at once, while ``may_continue()`` holds and the
        pass's budget lasts.
        """
        if task.report_start:
            # Produced before any step runs (the side task starts first), not awaited.
            self._spawn(self._delivery.until_delivered(
                self._catalog.runs, task.partition_key,
                encode(records.RunStarted(run_id=task.run_id, task_seq=task.seq,
                                          worker=self._worker_id, ts=wall_ms())),
                f"run.started for run {task.run_id} task {task.seq}",
            ))
        function = self._client.get_function(task.fn_id)
        if function is None:
            log.warning("worker %s: run %s asks for unknown function %r", self._worker_id,
                        task.run_id, task.fn_id)
            return await self._final(task, function_not_found(task))
        try:
            task = await self._refs.resolve(task)
        except _refs.RefError as exc:
            log.warning("worker %s: run %s: %s", self._worker_id, task.run_id, exc)
            return await self._final(task, ExecutionResult([exc.outcome]))
        one_pass = Pass(task, self._settings, self._catalog, self._delivery, self._worker_id,
                        may_continue)
        while True:
            try:
                result = await execute(function, one_pass.view(), settings=self._settings,
                                       executor=self._steps_pool,
                                       checkpoint=one_pass.checkpoint,
                                       logger=self._client.logger)
            except PassEnded:
                result = ExecutionResult([])
            except Exception as exc:  # a bug in the SDK itself: report it, retry the run
                log.exception("worker %s: executing run %s failed", self._worker_id,
                              task.run_id)
                result = ExecutionResult([_outcomes.function_failed(exc, now_ms=wall_ms())])
            self._observe(task, result.outcomes)
            if not await one_pass.go_on(result):
                return await one_pass.finish(result)

    async def _final(self, task: records.Task, result: ExecutionResult) -> bool:
        """Report ``result`` as the task's only outcome (the function never ran)."""
        return await Pass(task, self._settings, self._catalog, self._delivery,
                          self._worker_id, lambda: False).finish(result)
