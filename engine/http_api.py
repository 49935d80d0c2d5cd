"""The HTTP API, on Inngest's paths so existing senders work.

* ``POST /e/{event_key}`` — send one event or a list; answers ``{"ids": [...], "status": 200}``
* ``GET /v1/events/{id}/runs`` — the runs an event started
* ``GET /v1/runs/{run_id}`` — one run
* ``GET /v1/runs?limit=&before=`` — runs, newest first, paged by run id
* ``GET /v1/state/hash`` — a hash over every run state this engine holds
* ``GET /health``

Errors are JSON ``{"error": "...", "status": N}``. The layer holds no Kafka code: events
go through an ingest object, reads through a queries object.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

from aiohttp import web

from engine.ingest import IngestError
from engine.views import run_view

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 1000


class RunQueries(Protocol):
    """Read access to run states (internal format, see :mod:`engine.views`). Methods are
    called from a worker thread, never the event loop, so they may block briefly."""

    def get_run(self, run_id: str) -> dict[str, Any] | None: ...
    def runs_for_event(self, event_id: str) -> list[dict[str, Any]]: ...
    def list_runs(self, limit: int, before: str | None) -> list[dict[str, Any]]: ...
    def state_hash(self) -> str: ...
    def functions(self) -> list[dict[str, Any]]: ...


class Ingest(Protocol):
    """Stores a batch of raw events; raises :class:`engine.ingest.IngestError`."""

    async def send(self, raw: list[Any]) -> list[str]: ...


QUERIES: web.AppKey[RunQueries] = web.AppKey("queries")
INGEST: web.AppKey[Ingest] = web.AppKey("ingest")
CONFIG: web.AppKey[dict[str, Any]] = web.AppKey("config")


def error(status: int, message: str) -> web.Response:
    """A JSON error response in Inngest's shape."""
    return web.json_response({"error": message, "status": status}, status=status)


def _json(body: Any, status: int = 200) -> web.Response:
    # default=str: a state value msgpack accepted but JSON does not (bytes) must not
    # turn a read into a 500.
    return web.json_response(body, status=status, dumps=partial(json.dumps, default=str))


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


def _key_allowed(key: str, config: dict[str, Any]) -> bool:
    if config["dev"]:
        return True
    # Compare against every key, in constant time per key, so timing does not reveal
    # how much of a guessed key is right.
    ok = False
    for known in config["event_keys"]:
        ok |= hmac.compare_digest(key.encode(), known.encode())
    return ok


async def send_events(request: web.Request) -> web.Response:
    """``POST /e/{event_key}``: body is one event object or a list of them."""
    config = request.app[CONFIG]
    key = request.match_info["event_key"]
    if not _key_allowed(key, config):
        if not config["event_keys"]:
            return error(401, "event key not accepted: no event keys are configured "
                              "(set STEPSTREAM_EVENT_KEYS)")
        return error(401, "event key not accepted")
    limit = config["max_body_bytes"]
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"request body is {request.content_length} bytes, over the "
                          f"{limit}-byte limit")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"request body is over the {limit}-byte limit")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return error(400, f"body is not valid JSON: {exc}")
    if isinstance(payload, dict):
        events: list[Any] = [payload]
    elif isinstance(payload, list):
        events = payload
    else:
        return error(400, "body must be a JSON object (one event) or a list of events")
    try:
        ids = await request.app[INGEST].send(events)
    except IngestError as exc:
        return error(exc.status, exc.message)
    return _json({"ids": ids, "status": 200})


async def get_run(request: web.Request) -> web.Response:
    """``GET /v1/runs/{run_id}``."""
    run_id = request.match_info["run_id"]
    state = await _query(request, "get_run", run_id)
    if state is None:
        return error(404, f"run {run_id} not found")
    return _json({"data": run_view(state)})


async def event_runs(request: web.Request) -> web.Response:
    """``GET /v1/events/{event_id}/runs``."""
    states = await _query(request, "runs_for_event", request.match_info["event_id"])
    return _json({"data": [run_view(s) for s in states]})


async def list_runs(request: web.Request) -> web.Response:
    """``GET /v1/runs?limit=N&before=RUN_ID``: newest first; ``next`` is the ``before``
    of the following page, or null on the last one."""
    raw_limit = request.query.get("limit", str(DEFAULT_LIST_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return error(400, f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, "
                          f"got {raw_limit!r}")
    before = request.query.get("before") or None
    states = await _query(request, "list_runs", limit, before)
    views = [run_view(s) for s in states[:limit]]
    following = views[-1]["run_id"] if len(views) == limit else None
    return _json({"data": views, "next": following})


async def state_hash(request: web.Request) -> web.Response:
    """``GET /v1/state/hash``."""
    return _json({"hash": await _query(request, "state_hash")})


async def functions(request: web.Request) -> web.Response:
    """``GET /v1/functions``: the function registry as this engine knows it."""
    return _json({"data": await _query(request, "functions")})


async def health(request: web.Request) -> web.Response:
    """``GET /health``."""
    return _json({"status": "ok"})


def make_app(queries: RunQueries, ingest: Ingest, *, dev: bool, event_keys: frozenset[str],
             max_body_bytes: int | None = None) -> web.Application:
    """The API application. In ``dev`` mode any event key is accepted; otherwise only
    ``event_keys``. ``max_body_bytes`` caps a request body (default: four times the
    ingest's ``settings.max_record_bytes``, else 32 MiB)."""
    if max_body_bytes is None:
        settings = getattr(ingest, "settings", None)
        record_bytes = getattr(settings, "max_record_bytes", None)
        max_body_bytes = record_bytes * 4 if isinstance(record_bytes, int) else (
            DEFAULT_MAX_BODY_BYTES)
    app = web.Application(middlewares=[_json_errors], client_max_size=max_body_bytes)
    app[QUERIES] = queries
    app[INGEST] = ingest
    app[CONFIG] = {"dev": dev, "event_keys": frozenset(event_keys),
                   "max_body_bytes": max_body_bytes}
    app.router.add_post("/e/{event_key}", send_events)
    app.router.add_get("/v1/events/{event_id}/runs", event_runs)
    app.router.add_get("/v1/runs/{run_id}", get_run)
    app.router.add_get("/v1/runs", list_runs)
    app.router.add_get("/v1/state/hash", state_hash)
    app.router.add_get("/v1/functions", functions)
    app.router.add_get("/health", health)
    return app


def event_keys_from_env(value: str | None) -> frozenset[str]:
    """Parse ``STEPSTREAM_EVENT_KEYS`` (comma-separated; blanks ignored)."""
    return frozenset(k.strip() for k in (value or "").split(",") if k.strip())


async def start_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` (0 picks a free port; see :func:`bound_urls`).
    Stop with ``await runner.cleanup()``."""
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
