"""The API's view of a run, and its text rendering for the CLI.

Pure: turns the engine's internal run state (written by :mod:`engine.fold`) into the
JSON the HTTP API returns, field names as in Inngest's REST API plus stepstream's own
(``steps``, ``timeline``), and renders that JSON with ``rich`` for ``stepstream runs``.
Also the vocabulary the API and the CLI share for listing and cancelling runs: statuses,
the run filter, and how a user's time is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.runstate import TERMINAL
from topics.error_codes import STEP_ERRORED, coded
from topics.ids import trace_id_for

# Internal run statuses (engine/runstate.py), in lifecycle order; the filter values of
# ``GET /v1/runs?status=`` and ``stepstream runs list --status``.
RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled", "skipped")
# Longest reason accepted by ``POST /v1/runs/{id}/cancel`` (and ``runs cancel --reason``).
MAX_CANCEL_REASON_CHARS = 1000
# Latest time accepted as a filter: 9999-12-31T23:59:59.999Z.
MAX_TIME_MS = 253_402_300_799_999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

STATUS = {
    "queued": "Queued",
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "skipped": "Skipped",
}
_STATUS_STYLE = {"Queued": "cyan", "Running": "yellow", "Completed": "green", "Failed": "red",
                 "Cancelled": "magenta", "Skipped": "dim"}


def rfc3339(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ``2024-05-01T12:00:00.123Z``; None stays None."""
    if ms is None or isinstance(ms, bool) or not isinstance(ms, int):
        return None
    seconds, milli = divmod(ms, 1000)
    try:
        dt = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    # isoformat, not strftime: a page of runs formats thousands of these.
    return f"{dt.isoformat()[:19]}.{milli:03d}Z"


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


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a listing keeps. Every field left None matches everything.

    ``function``: the registered function id, exactly. ``statuses``: internal statuses
    (:data:`RUN_STATUSES`). ``since`` <= ``requested_at`` < ``until``, in
    epoch ms (the time the run was requested, not the event's own time).
    """

    function: str | None = None
    statuses: frozenset[str] | None = None
    since: int | None = None
    until: int | None = None

    def matches(self, state: dict[str, Any]) -> bool:
        if self.function is not None and state.get("fn_id") != self.function:
            return False
        if self.statuses is not None and run_status(state) not in self.statuses:
            return False
        if self.since is not None or self.until is not None:
            at = state.get("requested_at")
            if not isinstance(at, int):
                return False
            if self.since is not None and at < self.since:
                return False
            if self.until is not None and at >= self.until:
                return False
        return True


def parse_time_ms(value: str) -> int:
    """A time given by a user: epoch milliseconds (digits only) or ISO-8601
    (``2024-05-01``, ``2024-05-01T12:00:00Z``, ``2024-05-01T14:00+02:00``; without an
    offset it is UTC). Raises :class:`ValueError` with a message fit to show."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        # All digits is epoch ms, never ISO's basic format (20240501).
        ms = int(text) if len(text) <= 20 else MAX_TIME_MS + 1
    else:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is neither epoch milliseconds nor an ISO-8601 "
                             f"time (like 2024-05-01T12:00:00Z)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = (dt - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(f"{value!r} is out of range (1970 to 9999)")
    return ms


def parse_status(value: str) -> str:
    """A run status filter value (case-insensitive); raises :class:`ValueError`."""
    status = value.strip().lower()
    if status not in RUN_STATUSES:
        raise ValueError(f"{value!r} is not a run status (one of {', '.join(RUN_STATUSES)})")
    return status


def run_status(state: dict[str, Any]) -> str | None:
    """A run's status as users see it: the fold's, except that a run no worker has
    begun yet is ``queued``.

    The fold marks a run running when it dispatches the first task; whether a worker
    took it is read from what only a worker's report or ``run.started`` leaves behind
    (a step, a function-level retry, a later task, the start time). Derived here rather
    than stored, so the state, and the hash of every existing history, stay as they are.
    """
    status = state.get("status")
    if status not in ("queued", "running"):
        return status
    waiting = state.get("waiting")
    begun = (state.get("worker_started") is not None or bool(state.get("steps"))
             or (state.get("attempt") or 0) > 0 or (state.get("task_seq") or 0) > 1
             or (isinstance(waiting, dict) and waiting.get("kind") not in ("task", "slot", "throttle")))
    return "running" if begun else "queued"


def api_status(status: str | None) -> str:
    """Internal run status to the API's (Inngest's) status name."""
    if status is None:
        return "Unknown"
    return STATUS.get(status, status.capitalize())


def _attempt_view(a: dict[str, Any]) -> dict[str, Any]:
    return {"attempt": a.get("attempt"), "started_at": rfc3339(a.get("started_at")),
            "ended_at": rfc3339(a.get("ended_at")), "error": coded(a.get("error"), STEP_ERRORED)}


def _step_view(step_id: str, step: dict[str, Any], run_cancelled: bool) -> dict[str, Any]:
    status = step.get("status")
    if run_cancelled and status not in ("completed", "failed"):
        # Sleeping, waiting or retrying when the run was cancelled: it never will be.
        status = "cancelled"
    return {
        "id": step_id,
        "name": step.get("name", step_id),
        "status": status,
        "output": step.get("output"),
        "error": coded(step.get("error"), STEP_ERRORED),
        "until": rfc3339(step.get("until_ms")),
        "attempts": [_attempt_view(a) for a in step.get("attempts") or []],
    }


def _timeline_view(entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"at": rfc3339(entry.get("at")), "type": entry.get("type")}
    for key in ("step_id", "attempt", "detail"):
        if key in entry and entry[key] is not None:
            out[key] = entry[key]
    return out


def _with_times(d: Any) -> Any:
    """A copy of a state dict whose ``*_ms`` timestamps become RFC 3339 fields without
    the suffix (``due_ms`` -> ``due``); anything not a dict is returned as is."""
    if not isinstance(d, dict):
        return d
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(k, str) and k.endswith("_ms") and k[:-3] not in d:
            out[k[:-3]] = rfc3339(v)
        else:
            out[k] = v
    return out


def _children(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs this run started with ``step.invoke``, in the order it asked for them:
    from the timeline, the steps and what the run waits for (any may be missing)."""
    found: dict[str, dict[str, Any]] = {}

    def add(child: Any, step_id: Any, fn_id: Any) -> None:
        if not isinstance(child, str) or not child:
            return
        entry = found.setdefault(child, {"run_id": child, "step_id": None,
                                         "function_id": None})
        if entry["step_id"] is None and isinstance(step_id, str):
            entry["step_id"] = step_id
        if entry["function_id"] is None and isinstance(fn_id, str):
            entry["function_id"] = fn_id

    for e in state.get("timeline") or []:
        detail = e.get("detail") if isinstance(e, dict) else None
        if isinstance(detail, dict) and str(e.get("type", "")).startswith("invoke."):
            add(detail.get("child_run_id"), e.get("step_id") or detail.get("step_id"),
                detail.get("function_id") or detail.get("fn_id"))
    steps = state.get("steps") or {}
    for sid in state.get("step_order") or []:
        step = steps.get(sid)
        if isinstance(step, dict):
            add(step.get("child_run_id"), sid, step.get("function_id"))
    waiting = state.get("waiting")
    if isinstance(waiting, dict) and waiting.get("kind") == "invoke":
        add(waiting.get("child_run_id"), waiting.get("step_id"), waiting.get("function_id"))
    return list(found.values())


def run_span_ms(state: dict[str, Any], status: str | None = None
                ) -> tuple[int | None, int | None]:
    """When the run started and ended (epoch ms; None for not yet): a queued run has no
    start, whatever its state holds from before (a run re-queued for a slot).
    ``status`` is the run's :func:`run_status`, if the caller has it already."""
    start, end = state.get("started_at"), state.get("ended_at")
    if status is None:
        status = run_status(state)
    return (None if status == "queued" or not _is_ms(start) else start,
            end if _is_ms(end) else None)


def _is_ms(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def run_summary(state: dict[str, Any]) -> dict[str, Any]:
    """The fields of :func:`run_view` that need no steps, timeline or links: cheap enough
    for a table of many runs (the dashboard's runs page)."""
    event = state.get("event") or {}
    status = run_status(state)
    start, end = run_span_ms(state, status)
    return {
        "run_id": state.get("run_id"),
        "function_id": state.get("fn_id"),
        "event_id": event.get("id"),
        "event_name": event.get("name"),
        "status": api_status(status),
        "requested_at": rfc3339(state.get("requested_at")),
        "started_at": rfc3339(start),
        "ended_at": rfc3339(end),
    }


def run_view(state: dict[str, Any]) -> dict[str, Any]:
    """The API's JSON for one run, from the internal run state.

    ``status`` is Queued (no worker has begun it; ``started_at`` is then null),
    Running, Completed, Failed or Cancelled; a cancelled run's steps that had not ended
    say ``cancelled``.

    Besides Inngest's fields: ``cancelled_by`` (who cancelled it: ``{"kind": "api",
    "reason"}``, ``{"kind": "event", "event_id", "event"}`` or ``{"kind": "timeout",
    "which": "start"|"finish"}``), ``waiting`` (what a running run waits for, times as
    RFC 3339: ``due_ms`` -> ``due``), ``parent`` (the run whose ``step.invoke`` started
    this one), ``children`` (the runs this one invoked) and ``cron`` (the tick that
    started it), ``rerun_of`` (the run this one re-runs) and ``reruns`` (the runs
    re-running this one, oldest first). Missing keys (states written before they
    existed) read as None.
    """
    event = state.get("event") or {}
    steps = state.get("steps") or {}
    status = run_status(state)
    parent = state.get("parent")
    return {
        **run_summary(state),
        # Every event the run was started with, in order: a batch's (or a collecting
        # debounce's) whole list; for a run of one event, that one.
        "event_ids": [e.get("id") for e in (state.get("events") or [event])
                      if isinstance(e, dict)],
        "output": state.get("output"),
        "app_id": state.get("app_id"),
        # Errors recorded before codes existed, and the engine's own, get theirs here.
        "error": coded(state.get("error")),
        "attempt": state.get("attempt", 0),
        "steps": [_step_view(sid, steps[sid], status == "cancelled")
                  for sid in state.get("step_order") or [] if sid in steps],
        "timeline": [_timeline_view(e) for e in state.get("timeline") or []],
        "cancelled_by": state.get("cancelled_by"),
        "waiting": (None if status in TERMINAL
                    else _with_times(state.get("waiting")) or None),
        "parent": ({k: parent.get(k) for k in ("run_id", "partition_key", "step_id")}
                   if isinstance(parent, dict) else None),
        "children": _children(state),
        "cron": _with_times(state.get("cron")) or None,
        # Re-runs: the run this one re-runs, and the runs that re-ran this one.
        "rerun_of": state.get("rerun_of"),
        "reruns": list(state.get("reruns") or []),
        # The run's OpenTelemetry trace (README, "Traces"): derived, so always known.
        "trace_id": trace_id_for(str(state.get("run_id"))),
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


def cancelled_text(by: Any) -> str:
    """Who cancelled a run, from its ``cancelled_by``: one phrase."""
    if not isinstance(by, dict):
        return "cancelled"
    kind = by.get("kind")
    if kind == "api":
        reason = by.get("reason")
        return "cancelled through the API" + (f": {_short(reason, 200)}" if reason else "")
    if kind == "event":
        name = by.get("event")
        if isinstance(name, dict):  # the whole event rather than its name
            name = name.get("name")
        event_id = by.get("event_id")
        return ("cancelled by event " + (str(name) if name else "?")
                + (f" ({event_id})" if event_id else ""))
    if kind == "timeout":
        which = by.get("which")
        what = {"start": "did not start in time", "finish": "did not finish in time"}.get(
            str(which), str(which or ""))
        limit = by.get("limit_ms")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            what += f" (limit {_elapsed(limit)[1:]})"
        return "cancelled by timeout" + (f": {what.strip()}" if what.strip() else "")
    return f"cancelled ({_detail_text(by)})"


def waiting_text(waiting: Any) -> str:
    """What a run waits for, from the view's ``waiting`` (or the state's): one phrase."""
    if not isinstance(waiting, dict) or not waiting:
        return ""
    kind = waiting.get("kind")
    due = waiting.get("due") or rfc3339(waiting.get("due_ms"))
    until = f" until {due}" if due else ""
    step = waiting.get("step_id")
    of_step = f" (step {step})" if step else ""
    if kind == "task":
        return f"waiting for a worker (task {waiting.get('seq')})"
    if kind == "slot":
        key = waiting.get("key")
        of_key = f" of key {key}" if key is not None else ""
        ahead = waiting.get("ahead")
        n_ahead = f", {ahead} ahead" if isinstance(ahead, int) else ""
        return f"queued: concurrency limit {waiting.get('limit')}{of_key}{n_ahead}"
    if kind == "throttle":
        key = waiting.get("key")
        of_key = f" of key {key}" if key is not None else ""
        ahead = waiting.get("ahead")
        n_ahead = f", {ahead} ahead" if isinstance(ahead, int) else ""
        period = waiting.get("period")
        per = f" per {period}" if period else ""
        nxt = f"; next start at {due}" if due else ""
        return f"throttled: {waiting.get('limit')}{per}{of_key}{n_ahead}{nxt}"
    if kind == "timer":
        reason = waiting.get("reason")
        if reason == "sleep":
            return f"sleeping{of_step}{until}"
        if reason:
            return f"waiting for a timer ({reason}{', step ' + step if step else ''}){until}"
        return f"waiting for a timer{of_step}{until}"
    if kind == "event":
        return f"waiting for event {waiting.get('event') or '?'}{of_step}{until}"
    if kind == "invoke":
        fn = waiting.get("function_id")
        child = waiting.get("child_run_id")
        what = f"child run {child}" if child else "a child run"
        detail = ", ".join(x for x in (f"function {fn}" if fn else "",
                                       f"step {step}" if step else "") if x)
        return f"waiting for {what}" + (f" ({detail})" if detail else "") + until
    if kind == "steps":
        ids = [str(i) for i in waiting.get("step_ids") or []]
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        return f"waiting for {len(ids)} parallel step{'s' if len(ids) != 1 else ''} ({shown})"
    return f"waiting: {_detail_text(waiting)}"


def _wait_endings(timeline: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per step id, the timeline entry that ended its wait (resolved or timed out)."""
    return {str(e["step_id"]): e for e in timeline
            if isinstance(e, dict) and e.get("step_id")
            and e.get("type") in ("wait.resolved", "wait.timed_out")}


def _step_result(s: dict[str, Any], waiting: Any, wait_end: dict[str, Any] | None) -> str:
    if s.get("status") == "cancelled":
        return ""
    if (s.get("status") in ("waiting", "invoking") and isinstance(waiting, dict)
            and waiting.get("step_id") == s.get("id")):
        return waiting_text({**waiting, "step_id": None})
    if wait_end is not None:
        # A wait's "until" is its timeout; what ended it is what a reader wants.
        detail = wait_end.get("detail")
        detail = detail if isinstance(detail, dict) else {}
        if wait_end.get("type") == "wait.timed_out":
            return f"timed out at {wait_end.get('at')}"
        event_id = detail.get("event_id")
        return (f"event {detail.get('event') or '?'}" + (f" ({event_id})" if event_id else "")
                + f" at {wait_end.get('at')}")
    err = s.get("error")
    result = (f"{err.get('name', 'Error')}: {err.get('message', '')}"
              if isinstance(err, dict) else _short(err or s.get("output"), 60))
    if s.get("until"):
        result = f"until {s['until']}" + (f"; {result}" if result else "")
    return result


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
    event_ids = view.get("event_ids") or []
    if len(event_ids) > 1:
        shown = ", ".join(str(i) for i in event_ids[:20])
        more = f" and {len(event_ids) - 20} more" if len(event_ids) > 20 else ""
        head.append(f"\nevents ({len(event_ids)}) {shown}{more}")
    head.append(f"\nstarted {view.get('started_at') or '-'}  ended {view.get('ended_at') or '-'}")
    if view.get("trace_id"):
        head.append(f"\ntrace {view['trace_id']}")
    if view.get("output") is not None:
        head.append(f"\noutput {_short(view.get('output'), 200)}")
    if view.get("error"):
        err = view["error"]
        head.append(f"\nerror {err.get('name', 'Error')}: {err.get('message', '')}",
                    style="red")
    if status == "Cancelled" or view.get("cancelled_by"):
        head.append("\n" + cancelled_text(view.get("cancelled_by")),
                    style=_STATUS_STYLE["Cancelled"])
    waiting = view.get("waiting")
    if waiting and status not in ("Completed", "Failed", "Cancelled"):
        head.append("\n" + waiting_text(waiting))
    parent = view.get("parent")
    if isinstance(parent, dict) and parent.get("run_id"):
        head.append(f"\nparent run {parent['run_id']}"
                    + (f" (step {parent['step_id']})" if parent.get("step_id") else ""))
    for child in view.get("children") or []:
        extra = ", ".join(f"{label} {child[k]}" for k, label in
                          (("function_id", "function"), ("step_id", "step")) if child.get(k))
        head.append(f"\nchild run {child.get('run_id')}" + (f" ({extra})" if extra else ""))
    cron = view.get("cron")
    if isinstance(cron, dict):
        head.append(f"\ncron {cron.get('cron')}"
                    + (f", tick {cron['tick']}" if cron.get("tick") else ""))
    if view.get("rerun_of"):
        head.append(f"\nre-run of run {view['rerun_of']}")
    for rerun in view.get("reruns") or []:
        head.append(f"\nre-run as run {rerun}")

    parts: list[Any] = [head]
    steps = view.get("steps") or []
    if steps:
        st = Table(title="steps", title_justify="left", show_edge=False)
        for col in ("step", "status", "attempts", "output / error"):
            st.add_column(col)
        endings = _wait_endings(view.get("timeline") or [])
        for s in steps:
            result = _step_result(s, waiting, endings.get(str(s.get("id"))))
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
        # The API counts attempts from 0 (like ctx.attempt); shown from 1, so the Nth
        # attempt in the timeline is the Nth the steps table counts.
        tl.add_row(_clock(at), elapsed, str(e.get("type")), str(e.get("step_id") or ""),
                   str(attempt + 1) if isinstance(attempt, int) else "",
                   _detail_text(e.get("detail")))
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
                      str(requested), duration)
    return table
