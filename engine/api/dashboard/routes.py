"""The web dashboard: server-rendered pages (jinja2, autoescaped) on the API's port.

Pages: ``/`` runs, ``/runs/{id}`` one run, ``/events``, ``/functions``,
``/dead-letters``, ``/login``. Reads go through the app's queries object and the
events history (:mod:`engine.api.history`), never a store, so whatever answers the API
answers the dashboard. Actions (cancel, re-run, invoke, send an event) are ``fetch``
calls from ``static/app.js`` to ``/v1`` paths and ``/ui/send-event``.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from engine.api.dashboard.waterfall import bars, duration_text
from engine.api.event_body import BodyError, load_json
from engine.api.function_views import trigger_text
from engine.api.history import HISTORY, event_params
from engine.api.ingest import IngestError
from engine.api.topic_reader import CursorError
from engine.api.views import (
    RUN_STATUSES,
    RunFilter,
    api_status,
    cancelled_text,
    parse_rfc3339,
    parse_status,
    parse_time_ms,
    run_span_ms,
    run_status,
    run_summary,
    run_view,
    waiting_text,
)
from engine.clock import now_ms

HERE = Path(__file__).parent
PAGE_SIZE = 50
# Functions' status counts are taken over this many newest runs (a bounded read).
COUNT_WINDOW = 5000
MAX_SEND_BYTES = 1024 * 1024

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                          autoescape=True)
DEV: web.AppKey[bool] = web.AppKey("dashboard_dev")
INGEST: web.AppKey[Any] = web.AppKey("dashboard_ingest")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


_ENV.filters["pretty"] = _pretty
_ENV.filters["trigger"] = trigger_text
_ENV.filters["duration"] = duration_text


async def render(request: web.Request, name: str, status: int = 200, **ctx: Any
                 ) -> web.Response:
    """A page from ``templates/``; every value is escaped by jinja2's autoescape.

    Rendered on a thread: a big page is tens of milliseconds of Python, and on the
    event loop it would hold up every request behind it, /health included (the fault
    campaign measured /health at 400 ms while the fuzzer loaded pages)."""
    template = _ENV.get_template(name)
    html = await asyncio.to_thread(partial(template.render, path=request.path,
                                           dev=request.app[DEV], **ctx))
    return _html(html, status)


def render_bare(name: str, status: int = 200, **ctx: Any) -> web.Response:
    """A page that needs no request context (the login form)."""
    return _html(_ENV.get_template(name).render(**ctx), status)


def _html(text: str, status: int) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "same-origin"})


# No inline script or style is ever needed: a page's data can never become code.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


async def _query(request: web.Request, name: str, *args: Any) -> Any:
    from engine.api.http import _query  # the app's queries: shared with /v1

    return await _query(request, name, *args)


def _run_row(state: dict[str, Any]) -> dict[str, Any]:
    """A runs-table row, from the run's summary: a full run view (steps, attempts,
    timeline) per row made the runs page cost tens of milliseconds of event loop."""
    row = run_summary(state)
    start, end = run_span_ms(state)
    return {**{k: row[k] or "" for k in ("event_name", "event_id", "requested_at")},
            "run_id": row["run_id"], "function_id": row["function_id"],
            "status": row["status"],
            "duration": duration_text(end - start) if start and end else ""}


def _runs_filter(query: Any) -> tuple[RunFilter, dict[str, str]]:
    """The runs page's filter from its query; raises ValueError with a message."""
    form = {k: str(query.get(k, "")).strip() for k in ("function", "status", "since",
                                                       "until", "q", "cursor")}
    statuses = frozenset({parse_status(form["status"])}) if form["status"] else None
    since = parse_time_ms(form["since"]) if form["since"] else None
    until = parse_time_ms(form["until"]) if form["until"] else None
    return RunFilter(function=form["function"] or None, statuses=statuses, since=since,
                     until=until), form


async def _runs(request: web.Request) -> dict[str, Any]:
    try:
        flt, form = _runs_filter(request.query)
    except ValueError as exc:
        return {"rows": [], "next": None, "form": dict(request.query), "error": str(exc),
                "partial": None}
    q = form["q"]
    if q:  # a run id, else an event id
        state, missing = await _find_run(request, q)
        states = [state] if state is not None else await _query(request, "runs_for_event", q)
        return {"rows": [_run_row(s) for s in states], "next": None, "form": form,
                "error": None if states else f"no run or event {q!r} found",
                "partial": partial_text(getattr(states, "partial", None) or missing)}
    states = await _query(request, "list_runs", PAGE_SIZE + 1, form["cursor"] or None, flt)
    rows = [_run_row(s) for s in states[:PAGE_SIZE]]
    following = rows[-1]["run_id"] if len(states) > PAGE_SIZE and rows else None
    nxt = None
    if following:
        nxt = "?" + urlencode({**{k: v for k, v in form.items() if v}, "cursor": following})
    return {"rows": rows, "next": nxt, "form": form, "error": None,
            "partial": partial_text(getattr(states, "partial", None))}


async def _find_run(request: web.Request, run_id: str) -> tuple[Any, Any]:
    from engine.api.http import find_run_state  # shared with /v1/runs/{id}

    return await find_run_state(request, run_id)


def partial_text(partial: Any) -> str | None:
    """What a page says when some engine did not answer (docs/architecture.md, "Any
    engine answers"): the page shows what the others hold, and says what is missing."""
    if partial is None:
        return None
    parts = ", ".join(str(p) for p in partial.missing_partitions)
    return (f"Partial answer: partitions {parts} were not read (engines that did not "
            f"answer: {partial.silent()}); their runs are missing here. Reload to ask again.")


async def runs_page(request: web.Request) -> web.Response:
    """``/``: runs newest first, filters, search, paging; live refresh on page one."""
    data = await _runs(request)
    functions = await _query(request, "functions")
    return await render(request, "runs.html", statuses=RUN_STATUSES,
                        functions=[f["id"] for f in functions], **data)


async def runs_json(request: web.Request) -> web.Response:
    """``/ui/runs.json``: the runs page's rows, for its live refresh."""
    data = await _runs(request)
    return web.json_response({"rows": data["rows"], "error": data["error"],
                              "partial": data["partial"]})


async def run_page(request: web.Request) -> web.Response:
    """``/runs/{id}``: header, waterfall, steps, why it waits, actions."""
    run_id = request.match_info["run_id"]
    state, missing = await _find_run(request, run_id)
    if state is None:
        return await render(request, "error.html", status=404, title="Run not found",
                            message=f"No run {run_id} is known.",
                            partial=partial_text(missing))
    # A run of thousands of steps is a big view: built on a thread (see render).
    ctx = await asyncio.to_thread(_run_context, state, now_ms())
    return await render(request, "run.html", selected=request.query.get("step") or "", **ctx)


def _run_context(state: dict[str, Any], now: int) -> dict[str, Any]:
    """The run page's data: the run's view, its waterfall, and why it waits."""
    view = run_view(state)
    start = parse_rfc3339(view.get("started_at"))
    end = parse_rfc3339(view.get("ended_at"))
    status = view["status"]
    ended = status in ("Completed", "Failed", "Cancelled", "Skipped")
    return {"run": view, "trigger": state.get("events") or [state.get("event") or {}],
            "bars": bars(view, now),
            "duration": duration_text((end or now) - start) if start else "",
            "ended": ended,
            "waiting": None if ended else waiting_text(view.get("waiting")) or None,
            "cancelled": (cancelled_text(view.get("cancelled_by"))
                          if status == "Cancelled" else None),
            "trace_id": view.get("trace_id")}


async def events_page(request: web.Request) -> web.Response:
    """``/events``: received events newest first with the runs each started."""
    history = request.app.get(HISTORY)
    error = None
    events: list[dict[str, Any]] = []
    nxt = None
    form = {k: request.query.get(k, "") for k in ("name", "cursor")}
    if history is None:
        error = "this engine has no broker to read the events topic from"
    else:
        try:
            params = event_params({k: v for k, v in form.items() if v})
            found = await history.call(history.list_events, limit=PAGE_SIZE, **params)
            events = found.items
            if found.cursor:
                nxt = "?" + urlencode({**{k: v for k, v in form.items() if v},
                                       "cursor": found.cursor})
            if found.truncated and not events:
                error = "no events found within this page's read bound; try the next page"
        except (ValueError, CursorError) as exc:
            error = str(exc)
        except Exception as exc:  # the broker: say so on the page, never a 500
            error = f"the events topic could not be read: {exc}"
    for event in events:
        states = await _query(request, "runs_for_event", event["id"])
        event["runs"] = [_run_row(s) for s in states]
    return await render(request, "events.html", events=events, form=form, next=nxt, error=error)


async def send_event(request: web.Request) -> web.Response:
    """``POST /ui/send-event`` ``{"name", "data"}``: the same ingest as ``POST /e/{key}``;
    answers ``{"ids": [...]}`` or an error."""
    body = await request.read()
    if len(body) > MAX_SEND_BYTES:
        return _err(413, "the event is over 1 MiB")
    try:
        payload = load_json(body or b"{}")
    except BodyError as exc:
        return _err(400, str(exc))
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return _err(400, "give the event's name and its data (a JSON object)")
    event = {"name": payload["name"], "data": payload.get("data") or {}}
    try:
        ids = await request.app[INGEST].send_body(json.dumps(event).encode())
    except RecursionError:  # decodable, yet one level too deep to encode again
        return _err(400, "body is not valid JSON: nested too deeply")
    except IngestError as exc:
        return _err(exc.status, exc.message)
    return web.json_response({"ids": ids})


async def functions_page(request: web.Request) -> web.Response:
    """``/functions``: triggers, config, next cron tick, counts by status, Invoke."""
    functions = await _query(request, "functions")
    recent = await _query(request, "list_runs", COUNT_WINDOW, None, None)
    # Thousands of run states: counted off the event loop (see render).
    counts = await asyncio.to_thread(_status_counts, recent)
    return await render(request, "functions.html", functions=functions, counts=counts,
                        window=COUNT_WINDOW, window_full=len(recent) >= COUNT_WINDOW,
                        partial=partial_text(getattr(recent, "partial", None)))


def _status_counts(states: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Runs per function per status."""
    counts: dict[str, dict[str, int]] = {}
    for state in states:
        status = api_status(run_status(state))
        per = counts.setdefault(str(state.get("fn_id")), {})
        per[status] = per.get(status, 0) + 1
    return counts


async def dead_letters_page(request: web.Request) -> web.Response:
    """``/dead-letters``: records in ``dlq``: source topic, partition, offset, reason."""
    history = request.app.get(HISTORY)
    letters: list[dict[str, Any]] = []
    error = nxt = None
    if history is None:
        error = "this engine has no broker to read the dlq topic from"
    else:
        try:
            found = await history.call(history.dead_letters, limit=PAGE_SIZE,
                                            cursor=request.query.get("cursor") or None)
            letters = found.items
            nxt = "?" + urlencode({"cursor": found.cursor}) if found.cursor else None
        except CursorError as exc:
            error = str(exc)
        except Exception as exc:
            error = f"the dlq topic could not be read: {exc}"
    return await render(request, "dead_letters.html", letters=letters, next=nxt, error=error)


def _err(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


# The files the pages load, known at start: a request for any other name is a 404
# without touching the file system (aiohttp's static route answered a 4,000-character
# name with a 500, "File name too long"; found by the fault campaign).
STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}


async def static_file(request: web.Request) -> web.StreamResponse:
    """``GET /static/{name}``: the dashboard's CSS and JS."""
    path = STATIC.get(request.match_info["name"])
    if path is None:
        return _err(404, "no such static file")
    return web.FileResponse(path)


def setup(app: web.Application, ingest: Any, *, dev: bool) -> None:
    """Register the dashboard's pages and static files on ``app``."""
    app[DEV] = dev
    app[INGEST] = ingest
    app.router.add_get("/", runs_page)
    app.router.add_get("/runs/{run_id}", run_page)
    app.router.add_get("/events", events_page)
    app.router.add_get("/functions", functions_page)
    app.router.add_get("/dead-letters", dead_letters_page)
    app.router.add_get("/ui/runs.json", runs_json)
    app.router.add_post("/ui/send-event", send_event)
    app.router.add_get("/static/{name}", static_file)
