"""A function's flow-control state for ``GET /v1/functions/{id}``: per gate and key value,
how many runs hold it and how many wait.

Reads the gate tables of :mod:`engine.flow` as committed in each partition this engine
owns. The function's gates are ``g/{kind}/{fn_id}`` (no key) and
``g/{kind}/{fn_id}/{key value}``; an env-scoped concurrency gate is
``g/concurrency/env/{key value}``, shared by every function whose key gives that value,
so its counts include theirs (``"scope": "env"``). Concurrency gates are deleted when
idle, so a key nobody runs or waits for is not listed; throttle and rate-limit gates keep
their GCRA time, so they are listed only while it says something (runs wait, or the next
start must wait). Reads are bounded: at most :data:`MAX_GATES` gate entries over all
partitions, past which the answer says ``truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from engine.api.views import api_status, rfc3339, run_status
from engine.flow import gcra, slots, throttle
from engine.flow.backlog import Reader
from engine.runstate import RunState
from engine.store import keys

# Gate entries read for one answer, over every partition: the API answers in bounded
# time whatever the number of keys (a hot function can have millions).
MAX_GATES = 1000
SINGLETON = "singleton"
KINDS = (slots.KIND, throttle.KIND, throttle.RATE_LIMIT, SINGLETON)
ENV_PREFIX = "env/"


class GateReader(Reader, Protocol):
    """A partition's committed tables: gate values, and runs (a singleton's holder)."""

    def get_run(self, run_id: str) -> RunState | None: ...


@dataclass(slots=True)
class Found:
    """What :func:`read_gates` found in some partitions: the gates as API entries per
    kind, how many gate entries were read, and whether more were left unread."""

    gates: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {kind: [] for kind in KINDS})
    read: int = 0
    truncated: bool = False


def has_env_scope(flow: dict[str, Any] | None) -> bool:
    """Whether the function's registered flow config has an env-scoped concurrency limit."""
    limits = (flow or {}).get("concurrency") or []
    return any(isinstance(c, dict) and c.get("scope") in ("env", "account") for c in limits)


def read_gates(reader: GateReader, fn_id: str, flow: dict[str, Any] | None, now_ms: int,
               found: Found, budget: int = MAX_GATES) -> None:
    """Add the function's gates in one partition to ``found``, reading at most what is
    left of ``budget`` gate entries (the caller holds the partition's lock)."""
    for kind in KINDS:
        ranges: list[tuple[str, bool]] = [(fn_id, True), (fn_id + "/", False)]
        if kind == slots.KIND and has_env_scope(flow):
            ranges.append((ENV_PREFIX, False))
        for gate, exact in ranges:
            if exact:
                value = reader.get_value(keys.gate_key(kind, gate))
                rows = [] if value is None else [(keys.gate_key(kind, gate), value)]
            else:
                # One more than the budget allows: tells "truncated" from "exactly full".
                rows = reader.scan_values(keys.gate_key(kind, gate), budget - found.read + 1)
            for key, value in rows:
                if found.read >= budget:
                    found.truncated = True
                    return
                found.read += 1
                name = keys.parse_gate_key(key)[1]
                entry = gate_entry(kind, name, fn_id, value, flow, now_ms, reader)
                if entry is not None:
                    found.gates[kind].append(entry)


def key_of(gate: str, fn_id: str) -> tuple[str | None, str]:
    """``(key value, scope)`` of a gate name: None for the function-wide gate."""
    if gate == fn_id:
        return None, "fn"
    if gate.startswith(fn_id + "/"):
        return gate[len(fn_id) + 1:], "fn"
    return gate[len(ENV_PREFIX):], "env"


def gate_entry(kind: str, gate: str, fn_id: str, value: Any, flow: dict[str, Any] | None,
               now_ms: int, reader: GateReader) -> dict[str, Any] | None:
    """One gate as the API shows it; None for a throttle or rate limit at rest, or a
    value this version does not understand (never an error: it is only a view)."""
    if not isinstance(value, dict):
        return None
    key, scope = key_of(gate, fn_id)
    entry: dict[str, Any] = {"key": key}
    try:
        if kind == slots.KIND:
            return {**entry, "scope": scope, "running": len(value["held"]),
                    "queued": int(value["queued"]), "limit": int(value["limit"])}
        if kind == throttle.KIND:
            queued = int(value.get("queued") or 0)
            if queued and isinstance(value.get("timer_ms"), int):
                next_ms: int | None = value["timer_ms"]
            else:
                next_ms = _next_throttle_start(value, (flow or {}).get("throttle"), now_ms)
            if not queued and next_ms is None:
                return None
            return {**entry, "queued": queued, "next_start": rfc3339(next_ms)}
        if kind == throttle.RATE_LIMIT:
            cfg = (flow or {}).get("rate_limit")
            if not isinstance(cfg, dict) or not _busy(value.get("tat"), now_ms):
                return None
            decision = gcra.rate_limit(value["tat"], now_ms, int(cfg["limit"]),
                                       int(cfg["period_ms"]))
            return {**entry, "next_start": None if decision.allowed
                    else rfc3339(decision.next_ms)}
        if kind == SINGLETON:
            run_id = str(value["run"])
            state = reader.get_run(run_id)
            return {**entry, "run_id": run_id,
                    "status": None if state is None else api_status(run_status(dict(state)))}
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _busy(tat: Any, now_ms: int) -> bool:
    """Whether a GCRA time is still ahead of ``now_ms`` (else the gate is at rest)."""
    return (isinstance(tat, list) and len(tat) == 2
            and Fraction(int(tat[0]), int(tat[1])) > now_ms)


def _next_throttle_start(value: dict[str, Any], cfg: Any, now_ms: int) -> int | None:
    """When the throttle lets its next run start: None if one may start now."""
    if not _busy(value.get("tat"), now_ms):
        return None
    stored = value.get("cfg")
    if isinstance(stored, list) and len(stored) == 3:
        limit, period_ms, burst = (int(x) for x in stored)
    elif isinstance(cfg, dict):
        limit, period_ms = int(cfg["limit"]), int(cfg["period_ms"])
        burst = int(cfg.get("burst") or 1)
    else:
        return None
    decision = gcra.throttle(value["tat"], now_ms, limit, period_ms, burst)
    return None if decision.allowed else decision.next_ms


def flow_state(found: Found, partitions: int) -> dict[str, Any]:
    """The API's ``flow_state``: per kind, its gates sorted by key (the function-wide one
    first), with how many partitions were read and whether the read was cut short."""
    out: dict[str, Any] = {
        kind: sorted(entries, key=lambda e: (e.get("scope") == "env", e["key"] is not None,
                                             e["key"] or ""))
        for kind, entries in found.gates.items()}
    out["partitions"] = partitions
    out["truncated"] = found.truncated
    return out
