"""Running one task: its function on the worker's loop (large outputs read back first),
then the events its steps send, then its report."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sdk import _outcomes, _refs
from sdk._delivery import Delivery
from sdk._durations import wall_ms
from sdk._execution import ExecutionResult, execute, function_not_found
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
                 worker_id: str, spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self._client = client
        self._settings = settings
        self._catalog = catalog
        self._delivery = delivery
        self._refs = refs
        self._steps_pool = steps_pool
        self._worker_id = worker_id
        self._spawn = spawn

    async def run(self, task: records.Task) -> bool:
        """Run the task and deliver its report; False if the worker stopped first."""
        if task.report_start:
            # Produced before any step runs (the side task starts first), not awaited.
            self._spawn(self._delivery.until_delivered(
                self._catalog.runs, task.partition_key,
                encode(records.RunStarted(run_id=task.run_id, task_seq=task.seq,
                                          worker=self._worker_id, ts=wall_ms())),
                f"run.started for run {task.run_id} task {task.seq}",
            ))
        result = await self._execute(task)
        result = await self._delivery.step_events(result)
        report = _outcomes.fit_report(
            records.OutcomesReported(run_id=task.run_id, task_seq=task.seq,
                                     outcomes=result.outcomes, worker=self._worker_id,
                                     ts=wall_ms()),
            self._settings.max_record_bytes,
        )
        return await self._delivery.until_delivered(
            self._catalog.runs, task.partition_key, encode(report),
            f"report for run {task.run_id} task {task.seq}",
        )

    async def _execute(self, task: records.Task) -> ExecutionResult:
        function = self._client.get_function(task.fn_id)
        if function is None:
            log.warning("worker %s: run %s asks for unknown function %r", self._worker_id,
                        task.run_id, task.fn_id)
            return function_not_found(task)
        try:
            task = await self._refs.resolve(task)
        except _refs.RefError as exc:
            log.warning("worker %s: run %s: %s", self._worker_id, task.run_id, exc)
            return ExecutionResult([exc.outcome])
        try:
            return await execute(function, task, settings=self._settings,
                                 executor=self._steps_pool)
        except Exception as exc:  # a bug in the SDK itself: report it and retry the run
            log.exception("worker %s: executing run %s failed", self._worker_id, task.run_id)
            return ExecutionResult([_outcomes.function_failed(exc, now_ms=wall_ms())])
