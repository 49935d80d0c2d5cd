"""The API's view of a registered function, and its text rendering for the CLI.

Pure: turns a definition from the registry (``function.registered``, see
:mod:`engine.runtime.router`) into the JSON of ``GET /v1/functions`` and renders that JSON with
``rich`` for ``stepstream functions``.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.api.views import rfc3339
from topics.cron import CronSchedule
from topics.records import FunctionRegistered


def function_view(definition: FunctionRegistered, crons: list[CronSchedule],
                  now_ms: int) -> dict[str, Any]:
    """The API's JSON for one function.

    ``next_cron`` is the next tick of its cron triggers after ``now_ms`` (RFC 3339,
    null without cron); ``registered_at`` is when its app's worker last published it;
    ``flow`` its flow-control options as registered (``FunctionRegistered.flow``, null
    without any).
    """
    ticks = [c.next_after(now_ms) for c in crons]
    return {
        "id": definition.fn_id,
        "app_id": definition.app_id,
        "name": definition.name,
        "triggers": definition.triggers,
        "retries": definition.retries,
        "cancel": definition.cancel,
        "timeouts": definition.timeouts,
        "idempotency": definition.idempotency,
        "flow": definition.flow,
        "registered_at": rfc3339(definition.ts),
        "next_cron": rfc3339(min(ticks)) if ticks else None,
    }


def trigger_text(trigger: Any) -> str:
    """One trigger as a short phrase: ``event shop/* if <CEL>`` or ``cron <expr>``."""
    if not isinstance(trigger, dict):
        return str(trigger)
    if isinstance(trigger.get("cron"), str):
        return f"cron {trigger['cron']}"
    text = f"event {trigger.get('event')}"
    if trigger.get("expression"):
        text += f" if {trigger['expression']}"
    return text


def functions_table(views: list[dict[str, Any]]) -> Table:
    """A table of functions (API JSON), one row each, for ``functions list``."""
    table = Table(show_edge=False)
    for col in ("function id", "app", "triggers", "next cron tick"):
        table.add_column(col, no_wrap=col in ("function id", "next cron tick"),
                         overflow="fold")
    for v in views:
        table.add_row(str(v.get("id")), str(v.get("app_id")),
                      "\n".join(trigger_text(t) for t in v.get("triggers") or []),
                      v.get("next_cron") or "")
    return table


def function_text(view: dict[str, Any]) -> Group:
    """One function (API JSON) for ``functions show``: its definition, one fact a line."""
    head = Text()
    head.append(f"function {view.get('id')}", style="bold")
    lines = [("name", view.get("name")), ("app", view.get("app_id")),
             ("retries", view.get("retries")), ("registered", view.get("registered_at")),
             ("next cron tick", view.get("next_cron")),
             ("idempotency", view.get("idempotency"))]
    for label, value in lines:
        if value is not None and value != "":
            head.append(f"\n{label} {value}")
    for trigger in view.get("triggers") or []:
        head.append(f"\ntrigger {trigger_text(trigger)}")
    for rule in view.get("cancel") or []:
        head.append(f"\ncancel on {json.dumps(rule, sort_keys=True)}")
    timeouts = view.get("timeouts")
    if isinstance(timeouts, dict) and any(v is not None for v in timeouts.values()):
        head.append(f"\ntimeouts {json.dumps(timeouts, sort_keys=True)}")
    for line in flow_lines(view.get("flow")):
        head.append(f"\n{line}")
    parts: list[Any] = [head]
    state = view.get("flow_state")
    if isinstance(state, dict):
        parts.append(flow_state_text(state, bool(view.get("flow"))))
    return Group(*parts)


def _period(ms: Any) -> str:
    """A period in the largest unit that divides it: ``10s``, ``1m``, ``7d``."""
    if not isinstance(ms, int) or ms <= 0:
        return str(ms)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _per_key(option: dict[str, Any]) -> str:
    return f" per key {option['key']}" if option.get("key") else ""


def flow_lines(flow: Any) -> list[str]:
    """A function's registered flow control (``FunctionRegistered.flow``), one option a
    line: ``concurrency 1 per key event.data.k``, ``throttle 10 per 1m, burst 1``, ..."""
    if not isinstance(flow, dict):
        return []
    lines = []
    for c in flow.get("concurrency") or []:
        if isinstance(c, dict):
            extra = "".join(f", {name} {c[name]}" for name, default in
                            (("scope", "fn"), ("mode", "step"))
                            if c.get(name) not in (None, default))
            lines.append(f"concurrency {c.get('limit')}{_per_key(c)}{extra}")
    t = flow.get("throttle")
    if isinstance(t, dict):
        lines.append(f"throttle {t.get('limit')} per {_period(t.get('period_ms'))}, "
                     f"burst {t.get('burst', 1)}{_per_key(t)}")
    r = flow.get("rate_limit")
    if isinstance(r, dict):
        lines.append(f"rate limit {r.get('limit')} per {_period(r.get('period_ms'))}"
                     f"{_per_key(r)}")
    p = flow.get("priority")
    if isinstance(p, dict) and p.get("run"):
        lines.append(f"priority {p['run']}")
    single = flow.get("singleton")
    if isinstance(single, dict):
        lines.append(f"singleton {single.get('mode')}{_per_key(single)}")
    return lines


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def flow_state_text(state: dict[str, Any], configured: bool = True) -> Group:
    """The API's ``flow_state`` as a table, one row per gate and key: who holds it
    (running), who waits (queued), and the limit, next start or active run."""
    table = Table(show_edge=False)
    for col in ("gate", "key", "running", "queued", "limit", "next start / active run"):
        table.add_column(col, overflow="fold",
                         justify="right" if col in ("running", "queued", "limit") else "left")

    def key(entry: dict[str, Any]) -> str:
        return "(all runs)" if entry.get("key") is None else str(entry["key"])

    for e in state.get("concurrency") or []:
        gate = "concurrency" + (" (env)" if e.get("scope") == "env" else "")
        table.add_row(gate, key(e), _cell(e.get("running")), _cell(e.get("queued")),
                      _cell(e.get("limit")), "")
    for e in state.get("throttle") or []:
        table.add_row("throttle", key(e), "", _cell(e.get("queued")), "",
                      e.get("next_start") or "now")
    for e in state.get("rate_limit") or []:
        table.add_row("rate limit", key(e), "", "", "", e.get("next_start") or "now")
    for e in state.get("singleton") or []:
        table.add_row("singleton", key(e), "1", "", "",
                      f"run {e.get('run_id')} {_cell(e.get('status'))}".rstrip())
    notes = Text()
    if state.get("truncated"):
        notes.append("\n(more gates than shown: the first ones read only)")
    if not table.row_count:
        if not configured:
            return Group(notes) if notes else Group()
        return Group(Text("\nno run holds or waits for a flow-control gate"), notes)
    return Group(Text(""), table, notes) if notes else Group(Text(""), table)
