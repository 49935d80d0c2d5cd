"""The router without a broker: which functions an event starts, with which dedupe key,
and what a parent's ``step.invoke`` becomes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from engine.runtime.router import Registry, route, route_invoke
from topics.ids import run_id_for
from topics.records import (
    FUNCTION_FAILED_EVENT,
    FUNCTION_FINISHED,
    FUNCTION_INVOKED,
    Event,
    FunctionRegistered,
    InvokeFinished,
    InvokeRequested,
    RunRequested,
)

NOW = 50_000
BACKOFF = 1000


def function(fn_id: str, *events: str, expression: str | None = None,
             idempotency: str | None = None, app_id: str = "shop") -> FunctionRegistered:
    triggers: list[dict[str, Any]] = [{"event": e, "expression": expression} for e in events]
    return FunctionRegistered(fn_id=fn_id, app_id=app_id, name=fn_id, triggers=triggers,
                              retries=3, ts=1, idempotency=idempotency)


def registry(*fns: FunctionRegistered) -> Registry:
    reg = Registry()
    for fn in fns:
        reg.apply(fn)
    return reg


def event(name: str, data: dict[str, Any] | None = None, event_id: str = "E1",
          ts: int = 10_000) -> Event:
    return Event(name=name, data=data or {}, id=event_id, ts=ts)


def started(ev: Event, reg: Registry) -> list[str]:
    return sorted(r.fn_id for r in route(ev, reg, now_ms=NOW, backoff_base_ms=BACKOFF))


def only(ev: Event, reg: Registry) -> RunRequested:
    runs = route(ev, reg, now_ms=NOW, backoff_base_ms=BACKOFF)
    assert len(runs) == 1
    return runs[0]


def test_names_match_literally_or_by_wildcard() -> None:
    reg = registry(function("exact", "shop/order.created"),
                   function("prefix", "shop/*"),
                   function("middle", "shop/*.created"),
                   function("any", "*"),
                   function("other", "billing/*"))
    assert started(event("shop/order.created"), reg) == ["any", "exact", "middle", "prefix"]
    assert started(event("shop/order.paid"), reg) == ["any", "prefix"]
    assert started(event("shop/order.created.late"), reg) == ["any", "prefix"]
    assert started(event("shopping/order.created"), reg) == ["any"]


def test_a_filter_expression_must_hold_too() -> None:
    reg = registry(function("big", "shop/*", expression="event.data.total > 100"))
    assert started(event("shop/order.created", {"total": 500}), reg) == ["big"]
    assert started(event("shop/order.created", {"total": 5}), reg) == []
    assert started(event("shop/order.created", {}), reg) == []


def test_engine_events_start_only_functions_that_name_them() -> None:
    reg = registry(function("any", "*"),
                   function("finished-suffix", "*/function.finished"),
                   function("engine-all", "stepstream/*"),
                   function("engine-finished", FUNCTION_FINISHED))
    assert started(event(FUNCTION_FINISHED), reg) == ["engine-all", "engine-finished"]
    assert started(event(FUNCTION_INVOKED), reg) == ["engine-all"]
    assert started(event("shop/function.finished"), reg) == ["any", "finished-suffix"]


def test_runs_started_by_lifecycle_events_send_none_of_their_own() -> None:
    reg = registry(function("watcher", "stepstream/*"), function("user", "shop/*"))
    assert only(event(FUNCTION_FINISHED), reg).lifecycle_events is False
    assert only(event(FUNCTION_FAILED_EVENT), reg).lifecycle_events is False
    # Other engine events are no loop: their runs report their ends as usual.
    assert only(event(FUNCTION_INVOKED), reg).lifecycle_events is True
    assert only(event("shop/order.created"), reg).lifecycle_events is True


def test_the_request_copies_the_definition_and_derives_its_run_id() -> None:
    ev = event("shop/order.created", {"n": 1}, event_id="E7", ts=12_345)
    req = only(ev, registry(function("fn", "shop/*")))
    assert req.run_id == run_id_for("fn", "E7", 12_345)
    assert (req.fn_id, req.app_id, req.retries, req.backoff_base_ms, req.ts) == (
        "fn", "shop", 3, BACKOFF, NOW)
    assert req.event == {"name": "shop/order.created", "data": {"n": 1}, "id": "E7",
                         "ts": 12_345}
    assert req.events == [req.event]
    # A re-delivered event requests the same run, which the fold then ignores.
    assert only(ev, registry(function("fn", "shop/*"))).run_id == req.run_id


def test_without_an_idempotency_key_runs_dedupe_by_event_id() -> None:
    req = only(event("shop/x", event_id="E9"), registry(function("fn", "shop/*")))
    assert req.dedupe_key == "fn\x1fevent\x1fE9"
    assert req.partition_key == req.dedupe_key


def test_an_idempotency_key_dedupes_by_its_value_whatever_the_event() -> None:
    reg = registry(function("fn", "shop/*", idempotency="event.data.customer"))
    a = only(event("shop/x", {"customer": {"id": 4, "tier": "b"}}, event_id="E1"), reg)
    b = only(event("shop/x", {"customer": {"tier": "b", "id": 4}}, event_id="E2"), reg)
    assert a.dedupe_key == b.dedupe_key == 'fn\x1fkey\x1f{"id": 4, "tier": "b"}'
    assert a.partition_key == a.dedupe_key
    assert a.run_id != b.run_id
    other = only(event("shop/x", {"customer": {"id": 5}}, event_id="E3"), reg)
    assert other.dedupe_key == 'fn\x1fkey\x1f{"id": 5}'


def test_an_idempotency_key_that_does_not_evaluate_falls_back_to_the_event_id(
        caplog: pytest.LogCaptureFixture) -> None:
    reg = registry(function("fn", "shop/*", idempotency="event.data.customer"))
    with caplog.at_level(logging.WARNING, logger="stepstream.router"):
        req = only(event("shop/x", {}, event_id="E4"), reg)
    assert req.dedupe_key == "fn\x1fevent\x1fE4"
    assert "idempotency key did not evaluate" in caplog.text


def test_a_bad_trigger_is_skipped_and_the_others_still_route(
        caplog: pytest.LogCaptureFixture) -> None:
    bad = FunctionRegistered(fn_id="fn", app_id="shop", name="fn", retries=0, ts=1,
                             triggers=[{"event": "shop/*", "expression": "event.data.("},
                                       {"event": "billing/*"}, {"cron": "not a cron"}])
    with caplog.at_level(logging.ERROR, logger="stepstream.router"):
        reg = registry(bad)
    assert "skipped" in caplog.text
    assert started(event("shop/x"), reg) == []
    assert started(event("billing/x"), reg) == ["fn"]
    assert reg.functions["fn"].crons == []


def invoke(fn_id: str) -> InvokeRequested:
    return InvokeRequested(fn_id=fn_id, data={"n": 2}, event_id="IE1", ts=20_000,
                           parent={"run_id": "P1", "partition_key": "PK", "step_id": "call"})


def test_invoking_an_unknown_function_tells_the_parent_on_its_partition() -> None:
    emits = route_invoke(invoke("missing"), registry(function("fn", "shop/*")),
                         now_ms=NOW, backoff_base_ms=BACKOFF)
    assert [(e.topic, e.key) for e in emits] == [("runs", "PK")]
    done = emits[0].record
    assert isinstance(done, InvokeFinished)
    assert (done.run_id, done.step_id, done.output, done.ts) == ("P1", "call", None, NOW)
    assert done.child_run_id == run_id_for("missing", "IE1", 20_000)
    assert done.error is not None and done.error["name"] == "FunctionNotFound"
    assert "'missing'" in str(done.error["message"])


def test_invoking_a_known_function_requests_its_child_run() -> None:
    # Invoked by id: the child's own triggers do not have to match the invoke event.
    emits = route_invoke(invoke("fn"), registry(function("fn", "shop/*")),
                         now_ms=NOW, backoff_base_ms=BACKOFF)
    assert len(emits) == 1
    req = emits[0].record
    assert isinstance(req, RunRequested)
    assert (emits[0].topic, emits[0].key) == ("runs", req.partition_key)
    assert req.run_id == run_id_for("fn", "IE1", 20_000)
    assert req.event == {"name": FUNCTION_INVOKED, "data": {"n": 2}, "id": "IE1",
                         "ts": 20_000}
    assert req.parent == {"run_id": "P1", "partition_key": "PK", "step_id": "call"}
    assert req.dedupe_key == "fn\x1fevent\x1fIE1"
