"""The API's view of a run, and its text rendering for the CLI.

Pure: turns the engine's internal run state (written by :mod:`engine.fold`) into the
JSON the HTTP API returns, field names as in Inngest's REST API plus stepstream's own
(``steps``, ``timeline``), and renders that JSON with ``rich`` for ``stepstream runs``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

STATUS = {
    "queued": "Running",
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
_STATUS_STYLE = {"Running": "yellow", "Completed": "green", "Failed": "red",
                 "Cancelled": "magenta"}


def rfc3339(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ``2024-05-01T12:00:00.123Z``; None stays None."""
    if ms is None or isinstance(ms, bool) or not isinstance(ms, int):
        return None
    try:
        dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_rfc3339(value: str | None) -> int | None:
    """The inverse of :func:`rfc3339` (any RFC 3339 time); None if absent or malformed."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def api_status(status: str | None) -> str:
    """Internal run status to the API's (Inngest's) status name."""
    if status is None:
        return "Unknown"
    return STATUS.get(status, status.capitalize())


def _attempt_view(a: dict[str, Any]) -> dict[str, Any]:
    return {"attempt": a.get("attempt"), "started_at": rfc3339(a.get("started_at")),
            "ended_at": rfc3339(a.get("ended_at")), "error": a.get("error")}


def _step_view(step_id: str, step: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": step_id,
        "name": step.get("name", step_id),
        "status": step.get("status"),
        "output": step.get("output"),
        "error": step.get("error"),
        "until": rfc3339(step.get("until_ms")),
        "attempts": [_attempt_view(a) for a in step.get("attempts") or []],
    }


def _timeline_view(entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"at": rfc3339(entry.get("at")), "type": entry.get("type")}
    for key in ("step_id", "attempt", "detail"):
        if key in entry and entry[key] is not None:
            out[key] = entry[key]
    return out


def run_view(state: dict[str, Any]) -> dict[str, Any]:
    """The API's JSON for one run, from the internal run state."""
    event = state.get("event") or {}
    steps = state.get("steps") or {}
    return {
        "run_id": state.get("run_id"),
        "function_id": state.get("fn_id"),
        "event_id": event.get("id"),
        "status": api_status(state.get("status")),
        "output": state.get("output"),
        "started_at": rfc3339(state.get("started_at")),
        "ended_at": rfc3339(state.get("ended_at")),
        "app_id": state.get("app_id"),
        "event_name": event.get("name"),
        "requested_at": rfc3339(state.get("requested_at")),
        "error": state.get("error"),
        "attempt": state.get("attempt", 0),
        "steps": [_step_view(sid, steps[sid]) for sid in state.get("step_order") or []
                  if sid in steps],
        "timeline": [_timeline_view(e) for e in state.get("timeline") or []],
    }


# --- text rendering (CLI) --------------------------------------------------------


def _short(value: Any, width: int = 80) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str,
                                                              separators=(", ", ": "))
    return text if len(text) <= width else text[: width - 1] + "…"


def _clock(ms: int | None) -> str:
    stamp = rfc3339(ms)
    return stamp[11:23] if stamp else ""


def _elapsed(ms: int) -> str:
    if ms < 1000:
        return f"+{ms}ms"
    if ms < 60_000:
        return f"+{ms / 1000:.3f}s"
    minutes, rest = divmod(ms, 60_000)
    if minutes < 60:
        return f"+{minutes}m{rest / 1000:06.3f}s"
    hours, minutes = divmod(minutes, 60)
    return f"+{hours}h{minutes:02d}m{rest // 1000:02d}s"


def _detail_text(detail: Any) -> str:
    if isinstance(detail, dict):
        parts = []
        for k, v in detail.items():
            if k.endswith("_ms") and k != "late_ms" and isinstance(v, int) and v > 10**11:
                parts.append(f"{k[:-3]}={rfc3339(v)}")  # a timestamp, not a duration
            else:
                parts.append(f"{k}={_short(v, 60)}")
        return ", ".join(parts)
    return _short(detail)


def _as_view(run: dict[str, Any]) -> dict[str, Any]:
    # Accept both shapes so the CLI (API JSON) and tests/tools (internal state) share it.
    return run_view(run) if "fn_id" in run and "function_id" not in run else run


def timeline_text(run: dict[str, Any]) -> Group:
    """A readable run: a summary, its steps, and its timeline as a table (time,
    +elapsed from the first entry, event, step, attempt, detail).

    ``run`` is the API's run JSON (:func:`run_view`) or the internal run state.
    """
    view = _as_view(run)
    status = str(view.get("status"))
    head = Text()
    head.append(f"run {view.get('run_id')}  ", style="bold")
    head.append(status, style=_STATUS_STYLE.get(status, ""))
    head.append(f"\nfunction {view.get('function_id')} (app {view.get('app_id')})")
    head.append(f"\nevent {view.get('event_name') or ''} {view.get('event_id')}")
    head.append(f"\nstarted {view.get('started_at') or '-'}  ended {view.get('ended_at') or '-'}")
    if view.get("output") is not None:
        head.append(f"\noutput {_short(view.get('output'), 200)}")
    if view.get("error"):
        err = view["error"]
        head.append(f"\nerror {err.get('name', 'Error')}: {err.get('message', '')}",
                    style="red")

    parts: list[Any] = [head]
    steps = view.get("steps") or []
    if steps:
        st = Table(title="steps", title_justify="left", show_edge=False)
        for col in ("step", "status", "attempts", "output / error"):
            st.add_column(col)
        for s in steps:
            err = s.get("error")
            result = (f"{err.get('name', 'Error')}: {err.get('message', '')}" if err
                      else _short(s.get("output"), 60))
            if s.get("until"):
                result = f"until {s['until']}" + (f"; {result}" if result else "")
            st.add_row(str(s.get("name") or s.get("id")), str(s.get("status")),
                       str(len(s.get("attempts") or [])), result)
        parts += [Text(""), st]

    tl = Table(title="timeline", title_justify="left", show_edge=False)
    for col in ("time (UTC)", "elapsed", "event", "step", "attempt", "detail"):
        tl.add_column(col, no_wrap=col != "detail")
    entries = view.get("timeline") or []
    first = parse_rfc3339(entries[0].get("at")) if entries else None
    for e in entries:
        at = parse_rfc3339(e.get("at"))
        elapsed = _elapsed(at - first) if at is not None and first is not None else ""
        attempt = e.get("attempt")
        tl.add_row(_clock(at), elapsed, str(e.get("type")), str(e.get("step_id") or ""),
                   "" if attempt is None else str(attempt), _detail_text(e.get("detail")))
    parts += [Text(""), tl]
    return Group(*parts)


def runs_table(runs: list[dict[str, Any]]) -> Table:
    """A table of runs (API JSON or internal states), one row each, for ``runs list``."""
    table = Table(show_edge=False)
    for col in ("run id", "function", "status", "event", "requested", "duration"):
        # Only names may wrap on a narrow terminal; ids, statuses and times stay whole.
        table.add_column(col, no_wrap=col not in ("function", "event"), overflow="fold")
    for run in runs:
        view = _as_view(run)
        status = str(view.get("status"))
        start = parse_rfc3339(view.get("started_at"))
        end = parse_rfc3339(view.get("ended_at"))
        duration = _elapsed(end - start)[1:] if start is not None and end is not None else ""
        requested = view.get("requested_at") or view.get("started_at") or ""
        table.add_row(str(view.get("run_id")), str(view.get("function_id")),
                      Text(status, style=_STATUS_STYLE.get(status, "")),
                      str(view.get("event_name") or view.get("event_id") or ""),
                      str(requested).replace("T", " ").rstrip("Z"), duration)
    return table
