"""The wait matcher: the fold of one ``waits`` partition.

The ``waits`` topic is keyed by event name. It carries the waits runs register
(``wait.registered``, from ``step.wait_for_event`` and cancel rules), their removal
(``wait.cleared``), and a copy of every event, forwarded by the router. A wait and
every event of the name it awaits therefore meet on one partition, in one order: an
event after the wait in that order is checked against it, one before is not. That is
what makes matching correct although the waiting run and the event live on different
``runs``/``events`` partitions, with no window in which an event can slip past.

Its tables (one RocksDB database per ``waits`` partition) are the second table under
"State tables" in docs/architecture.md, built by :mod:`engine.store.keys`. An event of
name N looks up, per field waited on for N, only the waits whose value equals the
event's — never every waiting run — plus the unindexed (``if_exp``-only) waits of N,
which it evaluates.

Pure: time comes from records and their log times. An event is checked against a
wait's expiry at the time the engine appended it to ``waits``, never at its sender's
``ts`` (see docs/architecture.md). Whether a resolved wait still counts is for the run's
fold to decide (the run may have timed out meanwhile); the matcher only finds
candidates and forgets a wait once it has resolved it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import msgpack

from engine.expressions import ExpressionError, PreparedEvent, compiled
from engine.fold.core import Emit, NotApplicable, event_body, value_at
from engine.store import keys
from topics.records import Event, WaitCleared, WaitRegistered, WaitResolved

log = logging.getLogger("stepstream.matcher")

class WaitTables(Protocol):
    def get_value(self, key: bytes) -> Any: ...
    def put_value(self, key: bytes, value: Any, *, expires_ms: int | None = None) -> None: ...
    def put_raw(self, key: bytes, value: bytes) -> None: ...
    def delete_raw(self, key: bytes) -> None: ...
    def scan_raw(self, prefix: bytes, upto: bytes | None = None) -> list[tuple[bytes, bytes]]: ...
    def expire(self, now_ms: int) -> list[bytes]: ...


def on_wait_registered(tables: WaitTables, rec: WaitRegistered, appended_ms: int | None
                       ) -> list[Emit]:
    # Only engine-written records move expiry: an event's time is its sender's.
    tables.expire(rec.ts)
    return _register(tables, rec)


def on_wait_cleared(tables: WaitTables, rec: WaitCleared, appended_ms: int | None
                    ) -> list[Emit]:
    tables.expire(rec.ts)
    tables.delete_raw(keys.wait_key(rec.event, rec.match_field, rec.match_value, rec.wait_id))
    return []


def on_event(tables: WaitTables, event: Event, appended_ms: int | None) -> list[Emit]:
    """Resolve the waits ``event`` satisfies: only those whose expiry is after
    ``appended_ms``, its time in the ``waits`` log (None: no expiry check)."""
    if appended_ms is not None:
        # The forward time is the engine's, like the expiries: it may move expiry.
        tables.expire(appended_ms)
    return _event(tables, event, appended_ms)


def _register(tables: WaitTables, rec: WaitRegistered) -> list[Emit]:
    if rec.expires_ms is not None and rec.expires_ms <= rec.ts:
        return []
    if rec.match_field is not None:
        if rec.match_value is None:
            return []  # nothing equals a missing value
        tables.put_raw(keys.field_key(rec.event, rec.match_field), b"")
    if rec.if_exp:
        try:
            compiled(rec.if_exp)
        except ExpressionError as exc:
            raise NotApplicable(f"wait {rec.wait_id}: {exc}") from None
    key = keys.wait_key(rec.event, rec.match_field, rec.match_value, rec.wait_id)
    tables.put_value(key, {"wait_id": rec.wait_id, "run_id": rec.run_id,
                           "partition_key": rec.partition_key, "kind": rec.kind,
                           "if_exp": rec.if_exp, "trigger": rec.trigger,
                           "expires_ms": rec.expires_ms},
                     expires_ms=rec.expires_ms)
    return []


def _event(tables: WaitTables, event: Event, appended_ms: int | None) -> list[Emit]:
    body = event_body(event)
    candidates: list[tuple[bytes, bytes]] = []
    for fkey, _ in tables.scan_raw(keys.fields_of(event.name)):
        field = keys.parse_field_key(fkey, event.name)
        value = value_at(body, field)
        if value is not None:
            candidates.extend(tables.scan_raw(keys.waits_matching(event.name, field, value)))
    candidates.extend(tables.scan_raw(keys.unindexed_waits(event.name)))
    emits: list[Emit] = []
    candidate = PreparedEvent(body)  # converted to CEL once, for every condition
    for key, raw in candidates:
        wait = msgpack.unpackb(raw, raw=False)
        expires = wait.get("expires_ms")  # absent in waits stored by older engines
        if appended_ms is not None and expires is not None and expires <= appended_ms:
            continue  # over: a cancel rule's timeout, or a wait whose timeout is firing
        if wait["if_exp"] and not _holds(wait["if_exp"], wait["trigger"], candidate):
            continue
        tables.delete_raw(key)  # a wait resolves once
        emits.append(Emit("runs", wait["partition_key"], WaitResolved(
            run_id=wait["run_id"], wait_id=wait["wait_id"], kind=wait["kind"], event=body,
            ts=event.ts)))
    return emits


def _holds(source: str, trigger: dict[str, Any], candidate: PreparedEvent) -> bool:
    try:
        expr = compiled(source)
        activation = {"event": PreparedEvent(trigger).cel(), "async_": candidate.cel()}
    except ExpressionError as exc:
        log.warning("wait condition does not compile: %s", exc)
        return False
    except Exception as exc:  # an event CEL cannot hold (an int beyond int64): no match
        log.debug("wait condition not evaluable: %s", exc)
        return False
    return expr.evaluate_bool(activation, converted=True)
