"""The router's side of flow control, without a broker: options compiled once, evaluated
per event into the run's gates, and the home partition every gate of a function is on."""

from __future__ import annotations

from typing import Any

from engine.expressions import PreparedEvent
from engine.runtime.flowkeys import compile_flow, evaluate_flow

EVENT = PreparedEvent({"name": "e", "data": {"acct": "a7", "user": 3, "p": 900},
                       "id": "E1", "ts": 1})


def flow_for(flow: dict[str, Any], event: PreparedEvent = EVENT) -> dict[str, Any] | None:
    return evaluate_flow("app-fn", compile_flow("app-fn", flow), event)


def limit(n: int, key: str | None = None, scope: str = "fn") -> dict[str, Any]:
    return {"limit": n, "key": key, "scope": scope, "mode": "step"}


def test_no_options_no_flow() -> None:
    assert flow_for({}) is None
    assert flow_for({"priority": {"run": "event.data.p"}}) == {"priority": 600}  # clipped


def test_one_key_expression_spreads_runs_by_key() -> None:
    flow = flow_for({"concurrency": [limit(1, "event.data.acct")],
                     "throttle": {"limit": 2, "period_ms": 1000, "key": "event.data.acct",
                                  "burst": 1}})
    assert flow is not None
    assert flow["home"] == "app-fn/a7"
    assert flow["concurrency"][0]["gate"] == "app-fn/a7"
    assert flow["throttle"]["gate"] == "app-fn/a7"


def test_a_function_wide_limit_or_two_key_expressions_keep_runs_on_the_function() -> None:
    both = flow_for({"concurrency": [limit(1, "event.data.acct"), limit(5)]})
    assert both is not None and both["home"] == "app-fn"
    assert [g["gate"] for g in both["concurrency"]] == ["app-fn/a7", "app-fn"]
    two = flow_for({"concurrency": [limit(1, "event.data.acct")],
                    "singleton": {"key": "string(event.data.user)", "mode": "skip"}})
    assert two is not None and two["home"] == "app-fn"
    assert two["singleton"]["gate"] == "app-fn/3"


def test_an_env_key_is_shared_across_functions() -> None:
    flow = flow_for({"concurrency": [limit(2, '"openai"', scope="account")]})
    assert flow is not None and flow["home"] == "env/openai"
    assert flow["concurrency"][0]["scope"] == "env"
    other = evaluate_flow("other-fn", compile_flow(
        "other-fn", {"concurrency": [limit(2, '"openai"', scope="env")]}), EVENT)
    assert other is not None and other["home"] == "env/openai"


def test_an_env_key_beside_other_options_is_enforced_alone() -> None:
    flow = flow_for({"concurrency": [limit(2, '"openai"', scope="env"), limit(5)],
                     "rate_limit": {"limit": 1, "period_ms": 1000, "key": None}})
    assert flow is not None
    assert flow["home"] == "env/openai" and len(flow["concurrency"]) == 1
    assert "rate_limit" not in flow


def test_a_key_that_fails_to_evaluate_is_the_empty_string() -> None:
    flow = flow_for({"concurrency": [limit(1, "event.data.missing")],
                     "priority": {"run": "event.data.missing"}})
    assert flow is not None
    assert flow["home"] == "app-fn/" and flow["concurrency"][0]["key"] == ""
    assert flow["priority"] == 0


def test_bad_options_are_skipped_not_fatal() -> None:
    flow = flow_for({"concurrency": [{"limit": "x"}, limit(2)],
                     "throttle": {"limit": 0, "period_ms": 1000},
                     "singleton": {"mode": "queue"}})
    assert flow is not None
    assert [g["limit"] for g in flow["concurrency"]] == [2]
    assert "throttle" not in flow and "singleton" not in flow


def test_two_keyed_limits_that_give_the_same_value_are_two_gates() -> None:
    flow = flow_for({"concurrency": [limit(1, "event.data.acct"), limit(3, '"a7"')]})
    assert flow is not None and flow["home"] == "app-fn"
    assert [g["gate"] for g in flow["concurrency"]] == ["app-fn/a7", "app-fn/a7#2"]
