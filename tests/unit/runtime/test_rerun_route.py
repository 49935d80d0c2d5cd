"""The router's half of a re-run, without a broker: the new run's request, from the
function's current definition with its flow keys evaluated, no batch, debounce or
dedupe key; and the reason when the function is gone."""

from __future__ import annotations

from typing import Any

from engine.runtime.router import Registry, route_rerun
from topics.records import FunctionRegistered, RerunRequested, RerunRunRequested

E1 = {"name": "shop/order", "data": {"customer": "c7"}, "id": "E1", "ts": 1000}
E2 = {"name": "shop/order", "data": {"customer": "c7"}, "id": "E2", "ts": 1001}


def registry(flow: dict[str, Any] | None = None, idempotency: str | None = None
             ) -> Registry:
    reg = Registry()
    reg.apply(FunctionRegistered(fn_id="shop-f", app_id="shop", name="f",
                                 triggers=[{"event": "shop/order", "expression": None}],
                                 retries=5, ts=1, flow=flow, idempotency=idempotency))
    return reg


def command(**kw: Any) -> RerunRequested:
    fields: dict[str, Any] = {
        "run_id": "N1", "rerun_of": "R1", "rerun_of_key": "PK", "fn_id": "shop-f",
        "event": E1, "events": [E1], "from_step": None, "kept": {}, "kept_order": [],
        "ts": 5000}
    fields.update(kw)
    return RerunRequested(**fields)


def test_a_rerun_of_a_plain_function_lives_on_a_partition_of_its_own_id() -> None:
    req = route_rerun(command(), registry(idempotency="event.data.customer"),
                      now_ms=9000, backoff_base_ms=100)
    assert isinstance(req, RerunRunRequested)
    assert (req.run_id, req.fn_id, req.retries, req.ts) == ("N1", "shop-f", 5, 9000)
    # Idempotency does not suppress a re-run: there is no dedupe key to check.
    assert req.dedupe_key is None and req.flow is None
    assert req.partition_key == "shop-f\x1frerun\x1fN1"
    assert req.rerun == {"of": "R1", "of_key": "PK", "from_step": None, "kept": {},
                         "kept_order": []}


def test_a_batch_rerun_keeps_its_events_and_is_not_batched_again() -> None:
    flow = {"batch": {"max_size": 10, "timeout_ms": 5000, "key": None, "if_exp": None},
            "concurrency": [{"limit": 2, "key": "event.data.customer", "scope": "fn",
                             "mode": "run"}]}
    req = route_rerun(command(events=[E1, E2]), registry(flow), now_ms=9000,
                      backoff_base_ms=100)
    assert isinstance(req, RerunRunRequested)
    assert req.events == [E1, E2]
    assert req.flow is not None and "batch" not in req.flow
    # Its gates are evaluated here like any run's: it lives at their home.
    assert req.flow["concurrency"][0]["limit"] == 2
    assert req.partition_key == req.flow["home"]


def test_a_removed_function_gives_the_reason() -> None:
    answer = route_rerun(command(), Registry(), now_ms=9000, backoff_base_ms=100)
    assert isinstance(answer, str) and "no function 'shop-f'" in answer
