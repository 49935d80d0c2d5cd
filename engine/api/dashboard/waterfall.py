"""The run page's waterfall: one bar per step attempt, and sleeps, waits and invokes as
gaps, placed on the run's time span. Pure: from the API's run view (engine/api/views.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.api.views import parse_rfc3339

# What opens and what closes a gap, per timeline entry type (of one step id).
_GAP_OPEN = {"sleep.scheduled": "sleep", "wait.registered": "wait",
             "invoke.requested": "invoke"}
_GAP_CLOSE = {"timer.fired", "wait.resolved", "wait.timed_out", "invoke.finished",
              "invoke.timed_out"}


@dataclass(frozen=True, slots=True)
class Bar:
    """One row: ``kind`` is ``attempt`` or a gap (``sleep``, ``wait``, ``invoke``);
    ``left``/``width`` are percent of the span; ``open`` if it has not ended."""

    step_id: str
    label: str
    kind: str
    status: str
    start_ms: int
    end_ms: int
    left: float
    width: float
    open: bool


def bars(view: dict[str, Any], now_ms: int) -> list[Bar]:
    """The waterfall rows of a run view, in step order, each step's attempts then its
    gap. The span runs from the run's request to its end (``now_ms`` while it runs)."""
    start = parse_rfc3339(view.get("requested_at")) or parse_rfc3339(view.get("started_at"))
    if start is None:
        return []
    end = parse_rfc3339(view.get("ended_at")) or now_ms
    raw: list[tuple[str, str, str, str, int, int | None]] = []
    for step in view.get("steps") or []:
        sid = str(step.get("id"))
        name = str(step.get("name") or sid)
        attempts = step.get("attempts") or []
        for i, a in enumerate(attempts):
            a_start = parse_rfc3339(a.get("started_at"))
            if a_start is None:
                continue
            n = a.get("attempt")
            label = name + (f" (attempt {n + 1})" if isinstance(n, int) and len(attempts) > 1
                            else "")
            failed = bool(a.get("error")) or (i == len(attempts) - 1
                                              and step.get("status") == "failed")
            status = "failed" if failed else str(step.get("status") or "")
            raw.append((sid, label, "attempt", status, a_start,
                        parse_rfc3339(a.get("ended_at"))))
    opened: dict[str, tuple[str, int]] = {}
    names = {str(s.get("id")): str(s.get("name") or s.get("id"))
             for s in view.get("steps") or []}
    for entry in view.get("timeline") or []:
        sid = entry.get("step_id")
        at = parse_rfc3339(entry.get("at"))
        kind = str(entry.get("type"))
        if not sid or at is None:
            continue
        if kind in _GAP_OPEN:
            opened[str(sid)] = (_GAP_OPEN[kind], at)
        elif kind in _GAP_CLOSE and str(sid) in opened:
            gap, g_start = opened.pop(str(sid))
            raw.append((str(sid), f"{names.get(str(sid), sid)} ({gap})", gap, "done",
                        g_start, at))
    for sid, (gap, g_start) in opened.items():
        raw.append((sid, f"{names.get(sid, sid)} ({gap})", gap, "open", g_start, None))
    order = {str(s.get("id")): i for i, s in enumerate(view.get("steps") or [])}
    raw.sort(key=lambda r: (order.get(r[0], len(order)), r[4]))
    span = max(end - start, 1)
    out = []
    for sid, label, kind, status, b_start, b_end in raw:
        stop = b_end if b_end is not None else end
        left = min(max((b_start - start) / span * 100, 0.0), 100.0)
        width = min(max((stop - b_start) / span * 100, 0.4), 100.0 - left)
        out.append(Bar(sid, label, kind, status, b_start, stop, round(left, 2),
                       round(max(width, 0.4), 2), b_end is None))
    return out


def duration_text(ms: int | None) -> str:
    """A duration for people: 850 ms, 12.3 s, 4 m 05 s, 2 h 03 m."""
    if ms is None or ms < 0:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, rest = divmod(ms // 1000, 60)
    if minutes < 60:
        return f"{minutes} m {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"
