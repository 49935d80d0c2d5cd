"""Batching and debounce in the run fold: events collect in a gate on their key's
partition, and a run begins when the gate closes (by size, by bytes, or by its timer).
Pure, like every module of :mod:`engine.fold`; docs/architecture.md, "Batching and
debounce", says why a crash neither loses an event nor puts it in two runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from engine.fold.core import Emit, Limits, Tables, value_size
from engine.store import keys
from topics.records import RunRequested

# Gate timers share the pseudo run id of the throttle's (engine.fold.admission).
GATE_TIMER_RUN = "~gate"
BATCH_TIMER = "batch:"
DEBOUNCE_TIMER = "debounce:"
# A batch closes when its events' data reaches this (Inngest's 10 MiB), or earlier if
# the run's first task could not carry it.
BATCH_MAX_BYTES = 10 * 1024 * 1024

Begin = Callable[[Tables, RunRequested, str, Limits], list[Emit]]


def _request_fields(rec: RunRequested) -> dict[str, Any]:
    return {f.name: getattr(rec, f.name) for f in fields(rec)}


def _byte_cap(limits: Limits) -> int:
    # The run's first task carries every event inline: leave room for the rest of it.
    return min(BATCH_MAX_BYTES, limits.task_bytes - limits.task_bytes // 8)


def add_to_batch(tables: Tables, rec: RunRequested, event_id: str, limits: Limits,
                 begin: Begin) -> list[Emit]:
    """Put the request's event into its function's open batch (opening one); close the
    batch when it is full."""
    batch: dict[str, Any] = (rec.flow or {})["batch"]
    gate = str(batch["gate"])
    key = keys.gate_key("batch", gate)
    size = value_size(rec.event)
    cap = _byte_cap(limits)
    emits: list[Emit] = []
    open_batch = tables.get_value(key)
    if open_batch is not None and open_batch["bytes"] + size > cap:
        # This event would take the batch over what one run can carry: close it first.
        emits += _close(tables, gate, open_batch, rec.ts, limits, begin)
        open_batch = None
    if open_batch is None:
        due = rec.ts + int(batch["timeout_ms"])
        open_batch = {"run_id": rec.run_id, "request": _request_fields(rec), "events": [],
                      "bytes": 0, "opened_ms": rec.ts, "due_ms": due}
        tables.put_timer(due, GATE_TIMER_RUN, BATCH_TIMER + gate)
    open_batch["events"].append(rec.event)
    open_batch["bytes"] += size
    _hold_for(tables, rec, event_id, str(open_batch["run_id"]))
    if len(open_batch["events"]) >= int(batch["max_size"]) or open_batch["bytes"] >= cap:
        return emits + _close(tables, gate, open_batch, rec.ts, limits, begin)
    tables.put_value(key, open_batch)
    return emits


def debounce(tables: Tables, rec: RunRequested, event_id: str) -> list[Emit]:
    """Keep the request's event as the debounce's latest (opening one) and move the
    debounce's timer: ``period`` from now, never past ``first + timeout``."""
    options: dict[str, Any] = (rec.flow or {})["debounce"]
    gate = str(options["gate"])
    key = keys.gate_key("debounce", gate)
    held = tables.get_value(key)
    ts = _event_ts(rec.event, rec.ts)
    if held is None:
        held = {"run_id": rec.run_id, "request": _request_fields(rec), "event": rec.event,
                "events": [], "first_ms": rec.ts, "due_ms": None, "last_ts": ts}
    elif ts < held["last_ts"]:
        _hold_for(tables, rec, event_id, str(held["run_id"]))
        return []  # older than the event kept: ignored, as in Inngest
    else:
        held["event"], held["last_ts"] = rec.event, ts
    if options.get("collect"):
        held["events"].append(rec.event)
    due = rec.ts + int(options["period_ms"])
    timeout = options.get("timeout_ms")
    if isinstance(timeout, int):
        due = min(due, int(held["first_ms"]) + timeout)
    if held["due_ms"] != due:
        if held["due_ms"] is not None:
            tables.delete_timer(int(held["due_ms"]), GATE_TIMER_RUN, DEBOUNCE_TIMER + gate)
        tables.put_timer(due, GATE_TIMER_RUN, DEBOUNCE_TIMER + gate)
        held["due_ms"] = due
    _hold_for(tables, rec, event_id, str(held["run_id"]))
    tables.put_value(key, held)
    return []


def on_timer(tables: Tables, timer_id: str, due_ms: int, now: int, limits: Limits,
             begin: Begin) -> list[Emit]:
    """A batch's or a debounce's timer fired: begin its run (if the gate still waits for
    this timer: a batch closed by size, or a debounce moved, left it stale)."""
    if timer_id.startswith(BATCH_TIMER):
        gate = timer_id[len(BATCH_TIMER):]
        open_batch = tables.get_value(keys.gate_key("batch", gate))
        if open_batch is None or open_batch["due_ms"] != due_ms:
            return []
        return _close(tables, gate, open_batch, now, limits, begin)
    gate = timer_id[len(DEBOUNCE_TIMER):]
    key = keys.gate_key("debounce", gate)
    held = tables.get_value(key)
    if held is None or held["due_ms"] != due_ms:
        return []
    tables.delete_value(key)
    request = RunRequested(**held["request"])
    events = held["events"] or [held["event"]]
    # The run is requested now, when the quiet period ended (its timeouts count from
    # here, and so does its place in any backlog).
    emits = begin(tables, replace(request, event=held["event"], events=events, ts=now),
                  "", limits)
    _opened(tables, request.run_id, "debounce.opened", int(held["first_ms"]),
            {"gate": gate, "last_event_id": held["event"].get("id")})
    return emits


def _close(tables: Tables, gate: str, open_batch: dict[str, Any], now: int,
           limits: Limits, begin: Begin) -> list[Emit]:
    tables.delete_value(keys.gate_key("batch", gate))
    tables.delete_timer(int(open_batch["due_ms"]), GATE_TIMER_RUN, BATCH_TIMER + gate)
    request = RunRequested(**open_batch["request"])
    events = open_batch["events"]
    # Requested now, when the batch closed: its timeouts count from here.
    emits = begin(tables, replace(request, event=events[0], events=events, ts=now), "",
                  limits)
    _opened(tables, request.run_id, "batch.opened", int(open_batch["opened_ms"]),
            {"gate": gate, "events": len(events)})
    return emits


def _opened(tables: Tables, run_id: str, kind: str, at: int, detail: dict[str, Any]
            ) -> None:
    """Put when the batch or debounce opened at the head of the run's timeline."""
    state = tables.get_run(run_id)
    if state is not None and state["timeline"][0]["type"] != kind:
        state["timeline"].insert(0, {"at": at, "type": kind, "detail": detail})
        tables.put_run(run_id, state)


def _hold_for(tables: Tables, rec: RunRequested, event_id: str, run_id: str) -> None:
    """The event belongs to ``run_id`` now: its runs list finds it, and its dedupe key
    (a second delivery of the same event) points there."""
    if event_id:
        tables.index_event(event_id, run_id)
    if rec.dedupe_key and run_id != rec.run_id:
        held = tables.get_value(keys.dedupe_key(rec.dedupe_key))
        if held is not None:
            tables.put_value(keys.dedupe_key(rec.dedupe_key), {**held, "run_id": run_id},
                             expires_ms=int(held["expires_ms"]))


def _event_ts(event: dict[str, Any], default: int) -> int:
    ts = event.get("ts")
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else default
