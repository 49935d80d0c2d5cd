"""Bulk cancel's request parsing and matching (pure: no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.api.cancellations import matches, parse_limit, parse_request, view
from topics.records import CancellationCreated

NOW = 1_780_000_000_000


def parsed(body: Any) -> Any:
    return parse_request(body, NOW)


@pytest.mark.parametrize("body, fragment", [
    ({}, "no filter"),
    ({"app_id": None}, "no filter"),
    ([], "JSON object"),
    ({"function_id": "f", "env": "prod"}, "unknown field(s) env"),
    ({"function_id": ""}, "non-empty string"),
    ({"function_id": "f", "started_before": NOW + 3_600_000}, "in the future"),
    ({"function_id": "f", "started_after": NOW, "started_before": NOW - 1}, "must be before"),
    ({"function_id": "f", "started_after": "yesterday"}, "started_after"),
    ({"function_id": "f", "started_after": -5}, "out of range"),
    ({"function_id": "f", "started_after": True}, "RFC 3339"),
    ({"if": "event.data.n >"}, "does not compile"),
    ({"if": "x" * 5000}, "over the 4096 limit"),
    ({"all": "yes"}, "true or false"),
])
def test_bad_requests_are_refused_with_a_message(body: Any, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        parsed(body)
    assert fragment in str(err.value)


def test_a_request_with_no_filter_passes_only_with_all() -> None:
    flt, condition = parsed({"all": True})
    assert condition is None and flt.function_id is None and flt.started_before == NOW
    assert flt.run_filter().statuses == frozenset({"queued", "running"})


def test_times_take_rfc3339_or_epoch_ms_and_started_before_defaults_to_now() -> None:
    flt, _ = parsed({"function_id": "f", "started_after": "2026-05-01T00:00:00Z"})
    assert flt.started_after == 1_777_593_600_000 and flt.started_before == NOW
    rf = flt.run_filter()
    assert (rf.function, rf.since, rf.until) == ("f", 1_777_593_600_000, NOW)
    flt, _ = parsed({"app_id": "shop", "started_before": NOW - 10, "dry_run": True})
    assert flt.started_before == NOW - 10 and flt.dry_run


def run(app_id: str, n: Any) -> dict[str, Any]:
    return {"run_id": "R", "app_id": app_id, "event": {"name": "e", "data": {"n": n},
                                                       "id": "E", "ts": 1}}


def test_matching_checks_the_app_and_the_if_expression_over_the_trigger() -> None:
    flt, condition = parsed({"app_id": "shop", "if": "event.data.n > 2"})
    assert matches(run("shop", 3), flt, condition)
    assert not matches(run("shop", 2), flt, condition)
    assert not matches(run("other", 3), flt, condition)
    # An expression that fails on a run (no such field, wrong type) does not match it.
    assert not matches(run("shop", "x"), flt, condition)


def test_the_view_uses_inngests_names() -> None:
    rec = CancellationCreated(id="C", app_id=None, function_id="f", started_after=None,
                              started_before=NOW, if_exp="true", matched=3, ts=NOW + 1)
    assert view(rec) == {"id": "C", "app_id": None, "function_id": "f",
                         "started_after": None, "started_before": NOW, "if": "true",
                         "matched": 3, "created_at": NOW + 1}


@pytest.mark.parametrize("query, expected", [({}, 50), ({"limit": "7"}, 7)])
def test_list_limit(query: dict[str, str], expected: int) -> None:
    assert parse_limit(query) == expected


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "x"}, {"limit": "1001"},
                                   {"cursor": "a"}])
def test_list_limit_refuses_bad_values(query: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        parse_limit(query)
