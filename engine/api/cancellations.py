"""Bulk cancel, in Inngest's REST shape.

* ``POST /v1/cancellations`` ``{app_id, function_id, started_after, started_before, if}``
  (plus ours: ``all``, ``dry_run``, ``reason``): cancels every queued or running run
  that matches, and answers with the cancellation and how many runs it matched.
* ``GET /v1/cancellations?limit=``: the cancellations made, newest first (read from
  the topic by :class:`engine.api.topic_reader.TopicReader`, as the events are).

A cancellation applies to the runs that exist when it is made: ``started_before`` may
not lie in the future (Inngest also holds back runs that start later inside the window;
we refuse the request instead of pretending). Each matched run gets its own
``run.cancel`` on its partition, as ``POST /v1/runs/{id}/cancel`` does, so a run that
ends meanwhile simply stays ended. The cancellation itself is kept on the compacted
``cancellations`` topic, so any engine lists it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from engine.api.views import MAX_TIME_MS, RunFilter, parse_time_ms
from engine.clock import now_ms
from engine.expressions import CompiledExpression, ExpressionError, compile_expression
from topics.ids import new_ulid
from topics.records import CancellationCreated

FIELDS = ("app_id", "function_id", "started_after", "started_before", "if", "all",
          "dry_run", "reason")
MAX_EXPRESSION_CHARS = 4096
MAX_BODY_BYTES = 64 * 1024
# Runs one cancellation cancels at most; the answer says when more matched, and the
# same request again cancels the next ones (the cancelled ones no longer match).
MAX_MATCHED = 100_000
PAGE = 1000
CANCELS_IN_FLIGHT = 256
LIST_DEFAULT = 50
LIST_MAX = 1000
# Where a started_before "now" from a client with a clock a little ahead is still fine.
CLOCK_SLACK_MS = 60_000


@dataclass(frozen=True, slots=True)
class CancelFilter:
    """Which runs a cancellation matches: queued or running, of this app and function,
    requested in ``[started_after, started_before)``, whose trigger passes ``if_exp``."""

    app_id: str | None
    function_id: str | None
    started_after: int | None
    started_before: int
    if_exp: str | None
    dry_run: bool
    reason: str | None

    def run_filter(self) -> RunFilter:
        return RunFilter(function=self.function_id, statuses=frozenset({"queued", "running"}),
                         since=self.started_after, until=self.started_before)


def _text(payload: dict[str, Any], name: str, limit: int = 256) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{name}' must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"'{name}' is {len(value)} characters, over the {limit} limit")
    return value


def _time(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_TIME_MS:
            raise ValueError(f"'{name}' is out of range: epoch ms from 0 to {MAX_TIME_MS}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be an RFC 3339 time or epoch ms")
    try:
        return parse_time_ms(value)
    except ValueError as exc:
        raise ValueError(f"'{name}': {exc}") from None


def _flag(payload: dict[str, Any], name: str) -> bool:
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be true or false")
    return value


def parse_request(payload: Any, now: int) -> tuple[CancelFilter, CompiledExpression | None]:
    """The filter of a ``POST /v1/cancellations`` body; raises :class:`ValueError` with a
    message fit for a 400. Pure."""
    if not isinstance(payload, dict):
        raise ValueError('body must be a JSON object, like {"function_id": "shop-charge", '
                         '"started_before": "2026-12-01T00:00:00Z"}')
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    app_id, function_id = _text(payload, "app_id"), _text(payload, "function_id")
    after, before = _time(payload, "started_after"), _time(payload, "started_before")
    if_exp = _text(payload, "if", MAX_EXPRESSION_CHARS)
    everything = _flag(payload, "all")
    if not everything and app_id is function_id is after is before is if_exp is None:
        raise ValueError("a cancellation with no filter would cancel every run: give "
                         "function_id, app_id, started_after, started_before or if, or "
                         '"all": true')
    if before is None:
        before = now
    elif before > now + CLOCK_SLACK_MS:
        raise ValueError("'started_before' is in the future: a cancellation applies to the "
                         "runs that exist when it is made; send it again later")
    if after is not None and after >= before:
        raise ValueError(f"'started_after' ({after}) must be before 'started_before' "
                         f"({before})")
    compiled = None
    if if_exp is not None:
        try:
            compiled = compile_expression(if_exp)
        except ExpressionError as exc:
            raise ValueError(f"'if': {exc}") from None
    reason = _text(payload, "reason", 1000)
    return CancelFilter(app_id, function_id, after, before, if_exp,
                        _flag(payload, "dry_run"), reason), compiled


def matches(state: dict[str, Any], flt: CancelFilter, condition: CompiledExpression | None
            ) -> bool:
    """Whether a run (already past :meth:`CancelFilter.run_filter`) is cancelled: its app,
    and ``if`` over its trigger (``event``, as in Inngest; a batch's first event)."""
    if flt.app_id is not None and state.get("app_id") != flt.app_id:
        return False
    if condition is None:
        return True
    event = state.get("event") or {}
    fields = {k: event.get(k) for k in ("name", "data", "id", "ts")}
    return condition.evaluate_bool({"event": fields})


def parse_limit(query: Any) -> int:
    """``limit`` of ``GET /v1/cancellations`` (a multidict); raises :class:`ValueError`."""
    unknown = sorted(set(query) - {"limit"})
    if unknown:
        raise ValueError(f"unknown query parameter(s) {', '.join(unknown)} (known: limit)")
    raw = query.get("limit", str(LIST_DEFAULT))
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 8 else 0
    if not 1 <= limit <= LIST_MAX:
        raise ValueError(f"limit must be an integer from 1 to {LIST_MAX}, got {raw!r}")
    return limit


def view(rec: CancellationCreated) -> dict[str, Any]:
    """A cancellation as the API shows it (Inngest's field names)."""
    out = asdict(rec)
    out["if"] = out.pop("if_exp")
    out["created_at"] = out.pop("ts")
    return out


async def create(list_runs: Callable[[int, str | None, RunFilter], Awaitable[list[Any]]],
                 ingest: Any, flt: CancelFilter, condition: CompiledExpression | None
                 ) -> dict[str, Any]:
    """Match (through ``list_runs``, the API's query), cancel unless a dry run, and record
    the cancellation through ``ingest``; returns the answer's body."""
    matched: list[tuple[str, str]] = []
    more = False
    cursor: str | None = None
    while True:
        page = await list_runs(PAGE, cursor, flt.run_filter())
        for state in page:
            if matches(state, flt, condition):
                if len(matched) == MAX_MATCHED:
                    more = True
                    break
                matched.append((state["run_id"], state.get("partition_key") or state["run_id"]))
        if more or len(page) < PAGE:
            break
        cursor = page[-1]["run_id"]
    cid = new_ulid(now_ms())
    if flt.dry_run:
        return {"id": cid, "matched": len(matched), "more": more, "dry_run": True,
                "run_ids": [run_id for run_id, _ in matched[:LIST_MAX]]}
    reason = f"cancellation {cid}" + (f": {flt.reason}" if flt.reason else "")
    for start in range(0, len(matched), CANCELS_IN_FLIGHT):
        chunk = matched[start:start + CANCELS_IN_FLIGHT]
        await asyncio.gather(*(ingest.request_cancel(run_id, key, reason)
                               for run_id, key in chunk))
    rec = CancellationCreated(id=cid, app_id=flt.app_id, function_id=flt.function_id,
                              started_after=flt.started_after,
                              started_before=flt.started_before, if_exp=flt.if_exp,
                              matched=len(matched), ts=now_ms())
    await ingest.record_cancellation(rec)
    return {**view(rec), "more": more, "dry_run": False}
