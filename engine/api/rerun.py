"""Re-run, one and in bulk (docs/architecture.md, "Re-run").

* ``POST /v1/runs/{run_id}/rerun`` (body ``{"from_step": STEP_ID}`` optional): 202
  ``{"run_id": NEW_ID, "rerun_of": RUN_ID}`` once the request is stored.
* ``POST /v1/reruns`` ``{function_id, status, started_after, started_before, dry_run,
  all}``: every matching run re-run (or, with ``dry_run``, only counted); 200
  ``{"matched", "dry_run", "run_ids", "reruns": [{"run_id", "rerun_of"}], "failed"}``.

The API reads the original run (its events and, for ``from_step``, its kept outputs)
and stores a ``run.rerun`` command on the ``events`` topic with a fresh run id; the
router turns it into the new run's request with the function's flow keys, so the fold
never evaluates CEL. Runs to re-run in bulk are found through the queries object's
``list_runs``, never by opening stores.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import web

from engine.api.event_body import BodyError, load_json
from engine.api.http import INGEST, _json, _query, _read_body, error, function_by_id
from engine.api.ingest import IngestError
from engine.api.views import RunFilter, parse_status, parse_time_ms
from engine.clock import now_ms
from engine.runstate import RunState
from topics.catalog import Catalog
from topics.ids import new_ulid
from topics.records import Record, RerunRequested

# A re-run body holds a step id; a bulk body a filter.
MAX_RERUN_BODY_BYTES = 64 * 1024
# Runs one bulk request may re-run: more must be narrowed (a time range) and repeated.
MAX_BULK_RERUNS = 10_000
# Re-run commands stored at once by a bulk request (each waits for the broker's ack).
BULK_CONCURRENCY = 64
_BULK_FIELDS = ("function_id", "status", "started_after", "started_before", "dry_run",
                "all")


class RerunError(ValueError):
    """A re-run that cannot be requested: ``status`` and a message for the caller."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _RecordIngest(Protocol):
    catalog: Catalog

    async def send_record(self, topic: str, key: str, record: Record) -> None: ...


def rerun_request(state: RunState, run_id: str, from_step: str | None, now: int
                  ) -> RerunRequested:
    """The ``run.rerun`` command that re-runs ``state`` as run ``run_id``. With
    ``from_step``, the outputs of the steps completed before it (in the original's step
    order) are kept; raises :class:`RerunError` (400) naming the known steps if the
    original has no such step."""
    order = [s for s in state.get("step_order") or [] if s in (state.get("steps") or {})]
    kept: dict[str, dict[str, Any]] = {}
    if from_step is not None:
        if from_step not in order:
            known = ", ".join(order) if order else "none: the run recorded no step"
            raise RerunError(f"run {state['run_id']} has no step {from_step!r} (its steps: "
                             f"{known})")
        steps = state["steps"]
        for step_id in order[:order.index(from_step)]:
            step = steps[step_id]
            if step.get("status") == "completed":
                kept[step_id] = {"name": step.get("name", step_id),
                                 "output": step.get("output")}
    event = state.get("event") or {}
    return RerunRequested(
        run_id=run_id, rerun_of=state["run_id"],
        rerun_of_key=state.get("partition_key") or state["run_id"], fn_id=state["fn_id"],
        event=event, events=list(state.get("events") or [event]), from_step=from_step,
        # In recorded order (the order of ``steps``), which a RACE group's winner
        # follows, so a re-run picks the same winner as the original.
        kept=kept, kept_order=[s for s in state.get("steps") or {} if s in kept], ts=now,
        cron=state.get("cron"))


async def _store(request: web.Request, record: RerunRequested) -> None:
    ingest: Any = request.app[INGEST]
    sender: _RecordIngest = ingest
    await sender.send_record(sender.catalog.events, record.run_id, record)


async def _rerun_one(request: web.Request, state: RunState, from_step: str | None
                     ) -> dict[str, str]:
    """Re-run one run; ``{"run_id": new, "rerun_of": original}`` once stored."""
    fn_id = state["fn_id"]
    if await _query(request, "function", fn_id) is None:
        raise RerunError(f"function {fn_id!r} of run {state['run_id']} is no longer "
                         f"registered (it was removed); a re-run needs it: start a worker "
                         f"that defines it", 409)
    now = now_ms()
    record = rerun_request(state, new_ulid(now), from_step, now)
    try:
        await _store(request, record)
    except IngestError as exc:
        raise RerunError(exc.message, exc.status) from None
    return {"run_id": record.run_id, "rerun_of": record.rerun_of}


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await _read_body(request, MAX_RERUN_BODY_BYTES)
    if isinstance(raw, web.Response):
        return raw
    if not raw.strip():
        return {}
    try:
        payload = load_json(raw)
    except BodyError as exc:
        return error(400, str(exc))
    if not isinstance(payload, dict):
        return error(400, "body must be a JSON object")
    return payload


async def rerun_run(request: web.Request) -> web.Response:
    """``POST /v1/runs/{run_id}/rerun``, body ``{"from_step": STEP_ID}`` (optional): a
    new run of the same function with the same events, linked both ways. 202 ``{"run_id":
    NEW_ID, "rerun_of": RUN_ID}``; 400 for an unknown step (the answer names the known
    ones), 404 for an unknown run, 409 if its function was removed."""
    run_id = request.match_info["run_id"]
    payload = await _body(request)
    if isinstance(payload, web.Response):
        return payload
    unknown = sorted(payload.keys() - {"from_step"})
    if unknown:
        return error(400, f"unknown field(s) {', '.join(unknown)} (known: from_step)")
    from_step = payload.get("from_step")
    if from_step is not None and (not isinstance(from_step, str) or not from_step):
        return error(400, "'from_step' must be a step id (a non-empty string)")
    state = await _query(request, "get_run", run_id)
    if state is None:
        return error(404, f"run {run_id} not found")
    try:
        answer = await _rerun_one(request, state, from_step)
    except RerunError as exc:
        return error(exc.status, str(exc))
    return _json(answer, status=202)


def bulk_filter(payload: dict[str, Any]) -> tuple[RunFilter, bool]:
    """The filter and ``dry_run`` of a ``POST /v1/reruns`` body; raises
    :class:`RerunError` (400) with what is wrong, including no filter without ``all``."""
    unknown = sorted(payload.keys() - set(_BULK_FIELDS))
    if unknown:
        raise RerunError(f"unknown field(s) {', '.join(unknown)} (known: "
                         f"{', '.join(_BULK_FIELDS)})")
    for flag in ("dry_run", "all"):
        if not isinstance(payload.get(flag, False), bool):
            raise RerunError(f"'{flag}' must be true or false")
    function = payload.get("function_id")
    if function is not None and (not isinstance(function, str) or not function.strip()):
        raise RerunError("'function_id' must be a function id (a non-empty string)")
    raw_status = payload.get("status")
    statuses: set[str] = set()
    if raw_status is not None:
        values = [raw_status] if isinstance(raw_status, str) else raw_status
        if not isinstance(values, list) or not values or not all(
                isinstance(v, str) for v in values):
            raise RerunError("'status' must be a run status or a list of them")
        try:
            statuses = {parse_status(v) for v in values}
        except ValueError as exc:
            raise RerunError(f"status: {exc}") from None
    times: dict[str, int | None] = {}
    for name in ("started_after", "started_before"):
        value = payload.get(name)
        times[name] = None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise RerunError(f"'{name}' must be epoch ms or an ISO-8601 time")
        try:
            times[name] = parse_time_ms(str(value))
        except ValueError as exc:
            raise RerunError(f"{name}: {exc}") from None
    since, until = times["started_after"], times["started_before"]
    if since is not None and until is not None and since >= until:
        raise RerunError(f"started_after ({since}) must be before started_before ({until})")
    if (function is None and not statuses and since is None and until is None
            and not payload.get("all", False)):
        raise RerunError("a bulk re-run needs a filter (function_id, status, started_after "
                         "or started_before), or \"all\": true to re-run every run")
    return (RunFilter(function=function, statuses=frozenset(statuses) or None,
                      since=since, until=until), bool(payload.get("dry_run", False)))


async def bulk_rerun(request: web.Request) -> web.Response:
    """``POST /v1/reruns``: re-run every run matching the filter (requested at or after
    ``started_after``, before ``started_before``), at most ``MAX_BULK_RERUNS`` a
    request. Synchronous: answers once every re-run is stored, with the matched
    count, the matched run ids (newest first) and the new runs; ``dry_run`` only
    counts. A run whose re-run could not be stored is listed in ``failed``."""
    payload = await _body(request)
    if isinstance(payload, web.Response):
        return payload
    try:
        flt, dry_run = bulk_filter(payload)
    except RerunError as exc:
        return error(exc.status, str(exc))
    if flt.function is not None:
        found = await function_by_id(request, flt.function)
        if isinstance(found, web.Response):
            return found
    states: list[RunState] = await _query(request, "list_runs", MAX_BULK_RERUNS + 1, None,
                                          flt)
    if len(states) > MAX_BULK_RERUNS:
        return error(400, f"more than {MAX_BULK_RERUNS} runs match; narrow the filter "
                          f"(started_after/started_before) and re-run in parts")
    answer: dict[str, Any] = {"matched": len(states), "dry_run": dry_run,
                              "run_ids": [s["run_id"] for s in states], "reruns": [],
                              "failed": []}
    if dry_run or not states:
        return _json(answer)
    gate = asyncio.Semaphore(BULK_CONCURRENCY)

    async def one(state: RunState) -> dict[str, str]:
        async with gate:
            try:
                return await _rerun_one(request, state, None)
            except RerunError as exc:
                return {"rerun_of": state["run_id"], "error": str(exc)}

    for result in await asyncio.gather(*(one(s) for s in states)):
        answer["failed" if "error" in result else "reruns"].append(result)
    return _json(answer)
