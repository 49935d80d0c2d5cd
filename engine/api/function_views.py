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
    null without cron); ``registered_at`` is when its app's worker last published it.
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
    return Group(head)
