"""The HTTP API, on Inngest's paths so existing senders work.

* ``POST /e/{event_key}`` — send one event or a list; answers ``{"ids": [...], "status": 200}``
* ``GET /v1/events/{id}/runs`` — the runs an event started
* ``GET /v1/runs/{run_id}`` — one run
* ``GET /v1/runs?function=&status=&since=&until=&limit=&cursor=`` — runs, newest first,
  filtered, paged by run id
* ``POST /v1/runs/{run_id}/cancel`` — cancel a run (body ``{"reason": "..."}`` optional)
* ``POST /v1/cancellations``, ``GET /v1/cancellations`` — bulk cancel, Inngest's shape
* ``POST /v1/runs/{run_id}/rerun``, ``POST /v1/reruns`` — re-run one run, or every
  match of a filter (:mod:`engine.api.rerun`)
* ``GET /v1/functions``, ``GET /v1/functions/{id}`` — registered functions
* ``DELETE /v1/functions/{id}`` — remove a function from the registry
* ``GET /v1/state/hash`` — a hash over every run state this engine holds
* ``GET /health`` — liveness, and the engine's consumer lag per input topic
* ``GET /v1/events``, ``GET /v1/events/{id}``, ``GET /v1/dead-letters``,
  ``POST /v1/functions/{id}/invoke`` — see :mod:`engine.api.history`
* ``/`` and the other dashboard pages — see :mod:`engine.api.dashboard.routes`
* ``GET /metrics`` — Prometheus metrics (README, "Metrics"); needs a key outside dev mode

Errors are JSON ``{"error": "...", "status": N}``: bad input is always a 4xx with a
message, never a 500. The layer holds no Kafka code: events go through an ingest
object, reads through a queries object.

Outside dev mode every ``/v1`` path needs ``Authorization: Bearer <key>`` with one of
the API keys (401 without one, 403 with a wrong one); ``/e/{key}`` needs an event key in
its path; ``/health`` is open. The dashboard's login stores a key in a cookie, accepted
in place of the header (:mod:`engine.api.dashboard.auth`).
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from engine.api import cancellations, history
from engine.api.dashboard import auth as dash_auth
from engine.api.dashboard import routes as dashboard
from engine.api.event_body import SEED_HEADER, BodyError, load_json
from engine.api.ingest import IngestError
from engine.api.offloop import encode_json, json_built_off_loop
from engine.api.request_body import HANDLER_ARGS, BodyProblem, read_body
from engine.api.views import (
    MAX_CANCEL_REASON_CHARS,
    RunFilter,
    parse_status,
    parse_time_ms,
    run_view,
)
from engine.clock import now_ms
from engine.events import invalid_unicode_at
from engine.observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from engine.runstate import TERMINAL, RunState
from topics.records import CancellationCreated

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 1000
# A cancel body holds at most a reason of MAX_CANCEL_REASON_CHARS characters.
MAX_CANCEL_BODY_BYTES = 64 * 1024


class RunQueries(Protocol):
    """Read access to run states (internal format, see :mod:`engine.api.views`). Methods are
    called from a worker thread, never the event loop, so they may block briefly."""

    def get_run(self, run_id: str) -> RunState | None: ...
    def runs_for_event(self, event_id: str) -> list[RunState]: ...
    def list_runs(self, limit: int, cursor: str | None,
                  flt: RunFilter | None) -> list[RunState]:
        """Up to ``limit`` matching runs with ids below ``cursor``, newest first; fewer
        only when no more match (see :func:`engine.api.queries.list_runs`)."""
        ...
    def state_hash(self) -> str: ...
    def functions(self) -> list[dict[str, Any]]: ...
    def function(self, fn_id: str) -> dict[str, Any] | None:
        """One registered function (:func:`engine.api.function_views.function_view`)."""
        ...
    def function_detail(self, fn_id: str) -> dict[str, Any] | None:
        """:meth:`function` with its ``flow_state`` (:mod:`engine.api.flow_state`)."""
        ...


class Ingest(Protocol):
    """Stores raw events and run commands; raises :class:`engine.api.ingest.IngestError`."""

    async def send_body(self, body: bytes, seed: str | None = None) -> list[str]:
        """Decode, validate and store the events of a ``POST /e/{key}`` body; ``seed``
        is its ``x-inngest-event-id-seed`` header. Returns their ids once stored."""
        ...

    async def request_cancel(self, run_id: str, partition_key: str,
                             reason: str | None) -> Any:
        """Store a ``run.cancel`` for the run on its partition; returns once stored."""
        ...

    async def remove_function(self, fn_id: str) -> None:
        """Store a tombstone for the function on the ``functions`` topic."""
        ...

    async def record_cancellation(self, rec: CancellationCreated) -> None:
        """Keep a bulk cancellation on the ``cancellations`` topic."""
        ...


QUERIES: web.AppKey[RunQueries] = web.AppKey("queries")
INGEST: web.AppKey[Ingest] = web.AppKey("ingest")
CONFIG: web.AppKey[dict[str, Any]] = web.AppKey("config")


def error(status: int, message: str) -> web.Response:
    """A JSON error response in Inngest's shape."""
    return web.json_response({"error": message, "status": status}, status=status)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode_json(body), status=status,
                        content_type="application/json")


async def _query(request: web.Request, name: str, *args: Any) -> Any:
    fn = getattr(request.app[QUERIES], name)
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await asyncio.to_thread(fn, *args)


@web.middleware
async def _json_errors(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {404: f"no route for {request.method} {request.path}",
                   405: f"method {request.method} not allowed on {request.path}"}.get(
            exc.status, exc.reason)
        return error(exc.status, message)
    except Exception:
        log.exception("error serving %s %s", request.method, request.path)
        return error(500, "internal error (see the engine's log)")


def _key_in(key: str, keys: frozenset[str]) -> bool:
    # Compare against every key, in constant time per key, so timing does not reveal
    # how much of a guessed key is right. surrogatepass: a path or header can carry
    # any code point, and a key check must not raise.
    given = key.encode("utf-8", "surrogatepass")
    ok = False
    for known in keys:
        ok |= hmac.compare_digest(given, known.encode("utf-8", "surrogatepass"))
    return ok


def _key_allowed(key: str, config: dict[str, Any]) -> bool:
    return bool(config["dev"]) or _key_in(key, config["event_keys"])


def _is_open(path: str) -> bool:
    """Paths served without an API key: /health, and /e/{key}, which checks its event
    key itself. Everything else, known route or not, needs one outside dev mode."""
    return (path == "/health" or path.startswith("/e/") or path.startswith("/static/")
            or path == "/login")


@web.middleware
async def _api_keys(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
    config = request.app[CONFIG]
    if config["dev"] or _is_open(request.path):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if not request.headers.get("Authorization") and dash_auth.cookie_key(request):
        refused = dash_auth.refuse_cookie(request, partial(_key_in, keys=config["api_keys"]))
        return refused if refused is not None else await handler(request)
    if (scheme.lower() != "bearer" or not token) and dash_auth.is_page(request):
        return dash_auth.login_page(request)
    if scheme.lower() != "bearer" or not token:
        response = error(401, "this path needs an API key: send 'Authorization: Bearer "
                              "<key>' with one of the engine's STEPSTREAM_API_KEYS")
        response.headers["WWW-Authenticate"] = 'Bearer realm="stepstream"'
        return response
    if not _key_in(token, config["api_keys"]):
        return error(403, "API key not accepted (not one of the engine's "
                          "STEPSTREAM_API_KEYS)")
    return await handler(request)


async def send_events(request: web.Request) -> web.Response:
    """``POST /e/{event_key}``: body is one event object or a list of them."""
    config = request.app[CONFIG]
    key = request.match_info["event_key"]
    if not _key_allowed(key, config):
        if not config["event_keys"]:
            return error(401, "event key not accepted: no event keys are configured "
                              "(set STEPSTREAM_EVENT_KEYS)")
        return error(401, "event key not accepted")
    body = await _read_body(request, config["max_body_bytes"])
    if isinstance(body, web.Response):
        return body
    try:
        ids = await request.app[INGEST].send_body(body, request.headers.get(SEED_HEADER))
    except IngestError as exc:
        return error(exc.status, exc.message)
    return _json({"ids": ids, "status": 200})


async def _read_body(request: web.Request, limit: int) -> bytes | web.Response:
    """The request body (decoded per Content-Encoding), or the error response."""
    try:
        return await read_body(request, limit)
    except BodyProblem as exc:
        return error(exc.status, exc.message)


def _partial_fields(found: Any) -> dict[str, Any]:
    """``partial``, ``missing_engines`` and ``missing_partitions`` when an answer
    gathered from several engine processes lacks some partitions (engine/cluster);
    nothing when it is complete."""
    partial = getattr(found, "partial", None)
    return partial.fields() if partial is not None else {}


async def _find_run(request: web.Request, run_id: str) -> dict[str, Any] | web.Response:
    """The run, or the 404 to answer. When engines did not answer, the 404 says so
    (``partial``): the run may exist in a partition that was not read."""
    state, partial = await find_run_state(request, run_id)
    if state is not None:
        return state
    if partial is None:
        return error(404, f"run {run_id} not found")
    fields = partial.fields()
    silent = partial.silent()
    return _json({"error": f"run {run_id} not found in the partitions read; partitions "
                           f"{fields['missing_partitions']} were not read (engines that "
                           f"did not answer: {silent}), so it may exist: ask again",
                  "status": 404, **fields}, status=404)


async def find_run_state(request: web.Request, run_id: str) -> tuple[Any, Any]:
    """(the run's state or None, a ``Partial`` or None): with several engines, a run not
    found may sit on a partition whose engine did not answer."""
    if hasattr(request.app[QUERIES], "find_run"):
        found: tuple[Any, Any] = await _query(request, "find_run", run_id)
        return found
    return await _query(request, "get_run", run_id), None


async def get_run(request: web.Request) -> web.Response:
    """``GET /v1/runs/{run_id}``."""
    run_id = request.match_info["run_id"]
    state = await _find_run(request, run_id)
    if isinstance(state, web.Response):
        return state
    return await json_built_off_loop(lambda: {"data": run_view(state)})


async def run_trigger(request: web.Request) -> web.Response:
    """``GET /v1/runs/{run_id}/trigger`` (Inngest's shape): the events that started the
    run, in order — one, or every event of a batch."""
    run_id = request.match_info["run_id"]
    state = await _find_run(request, run_id)
    if isinstance(state, web.Response):
        return state
    events = state.get("events") or [state.get("event") or {}]
    return _json({"data": events})


async def event_runs(request: web.Request) -> web.Response:
    """``GET /v1/events/{event_id}/runs``."""
    states = await _query(request, "runs_for_event", request.match_info["event_id"])
    return await json_built_off_loop(
        lambda: {"data": [run_view(s) for s in states], **_partial_fields(states)})


_LIST_PARAMS = ("limit", "cursor", "before", "function", "status", "since", "until")


def _one(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once; None if absent. Raises ValueError."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ValueError(f"{name} is given {len(values)} times; give it once")
    return values[0] if values else None


def _list_params(request: web.Request) -> tuple[int, str | None, RunFilter]:
    """Limit, cursor and filter of ``GET /v1/runs``; raises ValueError with a message."""
    unknown = sorted(set(request.query.keys()) - set(_LIST_PARAMS))
    if unknown:
        raise ValueError(f"unknown query parameter(s) {', '.join(unknown)} "
                         f"(known: {', '.join(_LIST_PARAMS)})")
    raw_limit = _one(request, "limit")
    limit = DEFAULT_LIST_LIMIT
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, "
                             f"got {raw_limit!r}")
    cursor = _one(request, "cursor") or None
    before = _one(request, "before") or None  # the cursor's older name
    if cursor and before and cursor != before:
        raise ValueError("give cursor or before (its older name), not both")
    cursor = cursor or before
    if cursor is not None and (len(cursor) > 200 or not cursor.isprintable()):
        raise ValueError("cursor must be a run id (next_cursor of the previous page)")
    function = _one(request, "function")
    if function is not None and not function.strip():
        raise ValueError("function must be a function id, got an empty value")
    statuses: set[str] = set()
    for value in request.query.getall("status", []):
        parts = [v for v in value.split(",") if v.strip()]
        if not parts:
            raise ValueError("status must be a run status, got an empty value")
        for part in parts:
            statuses.add(parse_status(part))
    times: dict[str, int | None] = {}
    for name in ("since", "until"):
        raw = _one(request, name)
        times[name] = None
        if raw is not None:
            try:
                times[name] = parse_time_ms(raw)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    since, until = times["since"], times["until"]
    if since is not None and until is not None and since >= until:
        raise ValueError(f"since ({since}) must be before until ({until}); both are "
                         f"epoch ms, since inclusive, until exclusive")
    flt = RunFilter(function=function, statuses=frozenset(statuses) or None,
                    since=since, until=until)
    return limit, cursor, flt


async def list_runs(request: web.Request) -> web.Response:
    """``GET /v1/runs?function=&status=&since=&until=&limit=&cursor=``: newest first.

    ``function`` is a function id (exact); ``status`` one or more of queued, running,
    completed, failed, cancelled (repeated or comma-separated); ``since``/``until``
    bound the time the run was requested (epoch ms or ISO-8601; since inclusive, until
    exclusive). ``next_cursor`` is the ``cursor`` of the following page, null on the
    last one; ``next`` repeats it for older clients (who pass it as ``before``).
    """
    try:
        limit, cursor, flt = _list_params(request)
    except ValueError as exc:
        return error(400, str(exc))
    # One more than asked: whether it exists says if there is a next page.
    states = await _query(request, "list_runs", limit + 1, cursor, flt)
    return await json_built_off_loop(_runs_page, states, limit)


def _runs_page(states: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    views = [run_view(s) for s in states[:limit]]
    following = views[-1]["run_id"] if len(states) > limit and views else None
    return {"data": views, "next_cursor": following, "next": following,
            **_partial_fields(states)}


async def cancel_run(request: web.Request) -> web.Response:
    """``POST /v1/runs/{run_id}/cancel``, body ``{"reason": "..."}`` (optional): 202
    ``{"run_id", "status": "cancelling"}`` once the cancel is stored on the run's
    partition; the run becomes ``Cancelled`` when the engine folds it. 404 if this
    engine holds no such run, 409 if the run has ended already."""
    run_id = request.match_info["run_id"]
    body = await _read_body(request, MAX_CANCEL_BODY_BYTES)
    if isinstance(body, web.Response):
        return body
    reason: str | None = None
    if body.strip():
        try:
            payload = load_json(body)
        except BodyError as exc:
            return error(400, str(exc))
        if not isinstance(payload, dict):
            return error(400, 'body must be a JSON object, like {"reason": "duplicate"}')
        unknown = sorted(payload.keys() - {"reason"})
        if unknown:
            return error(400, f"unknown field(s) {', '.join(unknown)} (known: reason)")
        reason = payload.get("reason")
        if reason is not None and not isinstance(reason, str):
            return error(400, "'reason' must be a string")
        if reason is not None and len(reason) > MAX_CANCEL_REASON_CHARS:
            return error(400, f"'reason' is {len(reason)} characters, over the "
                              f"{MAX_CANCEL_REASON_CHARS}-character limit")
        if reason is not None and invalid_unicode_at(reason) is not None:
            return error(400, "'reason' is not valid Unicode (a lone surrogate such as "
                              "\\ud800)")
    state = await _find_run(request, run_id)
    if isinstance(state, web.Response):
        return state
    status = state.get("status")
    if status in TERMINAL:
        return error(409, f"run {run_id} is already {status}; only a queued or running "
                          f"run can be cancelled")
    key = state.get("partition_key") or run_id
    try:
        await request.app[INGEST].request_cancel(run_id, key, reason or None)
    except IngestError as exc:
        return error(exc.status, exc.message)
    return _json({"run_id": run_id, "status": "cancelling"}, status=202)


async def state_hash(request: web.Request) -> web.Response:
    """``GET /v1/state/hash``."""
    return _json({"hash": await _query(request, "state_hash")})


async def functions(request: web.Request) -> web.Response:
    """``GET /v1/functions``: the function registry as this engine knows it."""
    return _json({"data": await _query(request, "functions")})


def _no_function(fn_id: str) -> web.Response:
    return error(404, f"no function {fn_id!r} is registered (GET /v1/functions lists them; "
                      f"ids are app_id-fn_id)")


async def function_by_id(request: web.Request, function_id: str, app_id: str | None = None
                         ) -> str | web.Response:
    """The registered function a bulk request names, as its full id, else a 404.

    Ids here are ``app_id-fn_id``; Inngest's REST API takes ``app_id`` and the bare
    ``function_id`` apart, so that pair is accepted too. A name that matches no function
    is refused: answering ``matched: 0`` would look like success while doing nothing."""
    if await _query(request, "function", function_id) is not None:
        return function_id
    if app_id and not function_id.startswith(app_id + "-"):
        full = f"{app_id}-{function_id}"
        if await _query(request, "function", full) is not None:
            return full
    return _no_function(function_id)


async def get_function(request: web.Request) -> web.Response:
    """``GET /v1/functions/{fn_id}``: one registered function, its config and its
    flow-control state (who holds and who waits, per gate and key); 404 if there is none."""
    fn_id = request.match_info["fn_id"]
    view = await _query(request, "function_detail", fn_id)
    if view is None:
        return _no_function(fn_id)
    return _json({"data": view})


async def remove_function(request: web.Request) -> web.Response:
    """``DELETE /v1/functions/{fn_id}``: remove a function from the registry, as an app
    sync that no longer defines it would: its cron stops and no new event starts it;
    runs in flight keep their state. 200 ``{"data": {"id", "status": "removed"}}`` once
    the broker has stored the removal; 404 if no such function is registered. A worker
    of its app that still defines it registers it again when it starts."""
    fn_id = request.match_info["fn_id"]
    if await _query(request, "function", fn_id) is None:
        return _no_function(fn_id)
    try:
        await request.app[INGEST].remove_function(fn_id)
    except IngestError as exc:
        return error(exc.status, exc.message)
    return _json({"data": {"id": fn_id, "status": "removed"}})


async def post_cancellation(request: web.Request) -> web.Response:
    """``POST /v1/cancellations``: bulk cancel (:mod:`engine.api.cancellations`)."""
    body = await _read_body(request, cancellations.MAX_BODY_BYTES)
    if isinstance(body, web.Response):
        return body
    try:
        flt, condition = cancellations.parse_request(load_json(body), now_ms())
    except (BodyError, ValueError) as exc:
        return error(400, str(exc))

    if flt.function_id is not None:
        found = await function_by_id(request, flt.function_id, flt.app_id)
        if isinstance(found, web.Response):
            return found
        flt = replace(flt, function_id=found)

    async def page(limit: int, cursor: str | None, runs: RunFilter) -> list[RunState]:
        return list(await _query(request, "list_runs", limit, cursor, runs))
    try:
        return _json(await cancellations.create(page, request.app[INGEST], flt, condition))
    except IngestError as exc:
        return error(exc.status, exc.message)


async def list_cancellations(request: web.Request) -> web.Response:
    """``GET /v1/cancellations?limit=N``: the bulk cancellations, newest first."""
    try:
        limit = cancellations.parse_limit(request.query)
    except ValueError as exc:
        return error(400, str(exc))
    readers = request.app.get(history.HISTORY)
    if readers is None:
        return error(503, "this engine has no broker to read from")
    recs = await readers.call(readers.cancellations, limit=limit)
    return _json({"data": [cancellations.view(r) for r in recs]})


async def health(request: web.Request) -> web.Response:
    """``GET /health``: ``{"status": "ok", "consumer_lag": {...} | null}`` (README, API).
    An engine that falls behind says so here, rather than look like it lost runs."""
    report = getattr(request.app[QUERIES], "consumer_lag", None)
    return _json({"status": "ok", "consumer_lag": report() if callable(report) else None})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: the engine's metrics in Prometheus text format."""
    engine_metrics = getattr(getattr(request.app[QUERIES], "processor", None), "metrics", None)
    if engine_metrics is None or not engine_metrics.enabled:
        return error(404, "metrics are off on this engine (STEPSTREAM_METRICS=0)")
    body = await asyncio.to_thread(engine_metrics.render)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def make_app(queries: RunQueries, ingest: Ingest, *, dev: bool, event_keys: frozenset[str],
             api_keys: frozenset[str] = frozenset(),
             max_body_bytes: int | None = None) -> web.Application:
    """The API application. In ``dev`` mode no key is needed anywhere. Otherwise
    ``POST /e/{key}`` accepts only ``event_keys``, and every other path but ``/health``
    needs ``Authorization: Bearer <key>`` with one of ``api_keys`` (401 without, 403
    with a wrong one). ``max_body_bytes`` caps a request body (default: four times the
    ingest's ``settings.max_record_bytes``, else 32 MiB)."""
    if max_body_bytes is None:
        settings = getattr(ingest, "settings", None)
        record_bytes = getattr(settings, "max_record_bytes", None)
        max_body_bytes = record_bytes * 4 if isinstance(record_bytes, int) else (
            DEFAULT_MAX_BODY_BYTES)
    app = web.Application(middlewares=[_json_errors, _api_keys],
                          client_max_size=max_body_bytes, handler_args=HANDLER_ARGS)
    app[QUERIES] = queries
    app[INGEST] = ingest
    app[CONFIG] = {"dev": dev, "event_keys": frozenset(event_keys),
                   "api_keys": frozenset(api_keys), "max_body_bytes": max_body_bytes}
    app.router.add_post("/e/{event_key}", send_events)
    app.router.add_get("/v1/events/{event_id}/runs", event_runs)
    app.router.add_get("/v1/runs/{run_id}", get_run)
    app.router.add_get("/v1/runs", list_runs)
    app.router.add_post("/v1/runs/{run_id}/cancel", cancel_run)
    # Inngest's REST API cancels with DELETE; the same handler and answers.
    app.router.add_delete("/v1/runs/{run_id}", cancel_run)
    app.router.add_get("/v1/runs/{run_id}/trigger", run_trigger)
    app.router.add_post("/v1/cancellations", post_cancellation)
    app.router.add_get("/v1/cancellations", list_cancellations)
    app.router.add_get("/v1/state/hash", state_hash)
    app.router.add_get("/v1/functions", functions)
    app.router.add_get("/v1/functions/{fn_id}", get_function)
    app.router.add_delete("/v1/functions/{fn_id}", remove_function)
    app.router.add_get("/health", health)
    # Issue 12: the events history, dead letters, invoke, and the dashboard.
    app[history.HISTORY] = history.history_from(ingest)
    app.on_cleanup.append(_close_history)
    app.router.add_get("/v1/events", history.list_events)
    app.router.add_get("/v1/events/{event_id}", history.get_event_by_id)
    app.router.add_get("/v1/dead-letters", history.list_dead_letters)
    app.router.add_post("/v1/functions/{fn_id}/invoke", history.invoke_function)
    dashboard.setup(app, ingest, dev=dev)
    app.router.add_get("/login", dash_auth.login_get)
    app.router.add_post("/login", partial(dash_auth.login_post, keys=frozenset(api_keys),
                                          check=_key_in))
    app.router.add_post("/logout", dash_auth.logout)
    # Re-run (engine/api/rerun.py imports this module's helpers, hence imported here).
    from engine.api.rerun import bulk_rerun, rerun_run
    app.router.add_post("/v1/runs/{run_id}/rerun", rerun_run)
    app.router.add_post("/v1/reruns", bulk_rerun)
    app.router.add_get("/metrics", metrics)
    return app


async def _close_history(app: web.Application) -> None:
    reader = app[history.HISTORY]
    if reader is not None:
        await asyncio.to_thread(reader.close)


def event_keys_from_env(value: str | None) -> frozenset[str]:
    """Parse ``STEPSTREAM_EVENT_KEYS`` or ``STEPSTREAM_API_KEYS`` (comma-separated;
    blanks ignored)."""
    return frozenset(k.strip() for k in (value or "").split(",") if k.strip())


class ClientErrorsInOneLine(logging.Filter):
    """aiohttp logs a request it cannot parse (a bad header, a broken request line) as
    an ERROR with a traceback, though it answers the client 400. That is the client's
    error, not the server's: one INFO line without the traceback, so a fuzzer or a
    port scanner does not bury real errors in the engine's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if (record.levelno < logging.ERROR or not isinstance(exc, HttpProcessingError)
                or (exc.code or 400) >= 500):
            return True  # aiohttp's own DEBUG line for a non-HTTP client stays as it is
        said = record.getMessage().removeprefix("Error handling request from ")
        reason = (str(exc.message).strip().splitlines() or [""])[0][:200]
        record.msg = "bad HTTP request (from %s) answered %d: %s"
        record.args = (said, exc.code or 400, reason)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


_client_errors_filter = ClientErrorsInOneLine()


async def start_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` (0 picks a free port; see :func:`bound_urls`).
    Stop with ``await runner.cleanup()``."""
    server_log = logging.getLogger("aiohttp.server")
    if _client_errors_filter not in server_log.filters:
        server_log.addFilter(_client_errors_filter)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_urls(runner: web.AppRunner) -> Sequence[str]:
    """``http://host:port`` for every address the runner listens on."""
    urls = []
    for addr in runner.addresses:
        host, port = addr[0], addr[1]
        urls.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    return urls
