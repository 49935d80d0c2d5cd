"""The flow-control benchmark's own logic (bench/flow.py), without a broker: the limit
check read from the log's passes, and the overhead verdict against the 25 % floor."""

from __future__ import annotations

from typing import Any

from bench.flow import FLOOR_OVERHEAD_PCT, in_flight, max_overlap, overhead, summary_rows
from bench.flow_app import LIMIT, event_maker, key_of
from bench.hops import Passes


def test_max_overlap_counts_intervals_open_at_one_instant() -> None:
    assert max_overlap([]) == 0
    assert max_overlap([(0, 10), (5, 15), (7, 8)]) == 3
    # A release at the instant the next pass starts is a hand-over, not an overlap.
    assert max_overlap([(0, 10), (10, 20), (20, 30)]) == 1


def _passes(spans: dict[str, tuple[int, int]], gates: dict[str, str]) -> Passes:
    p = Passes()
    for run_id, (start, end) in spans.items():
        p.tasks[(run_id, 1)] = start
        p.finals[(run_id, 1)] = end
        p.gates[run_id] = [gates[run_id]] if run_id in gates else []
    return p


def test_in_flight_is_per_gate_key_and_overall() -> None:
    spans = {"a1": (0, 10), "a2": (2, 12), "b1": (1, 11), "c1": (20, 30), "open": (0, 99)}
    p = _passes(spans, {"a1": "fn/a", "a2": "fn/a", "b1": "fn/b", "c1": "fn/a"})
    del p.finals[("open", 1)]  # a pass without its final report is not counted
    got = in_flight(p)
    assert got["overall"] == 3
    assert (got["per_key_max"], got["key"], got["gate_keys"]) == (2, "fn/a", 2)
    assert got["passes"] == 4
    assert got["pass_ms"]["mean"] == 10


def test_in_flight_without_gates_has_no_per_key_figure() -> None:
    got = in_flight(_passes({"r1": (0, 5), "r2": (1, 6)}, {}))
    assert got["overall"] == 2 and got["per_key_max"] is None


def _run(rate: float, p50: float, p99: float, *, peak: int | None = LIMIT,
         completed: int = 100, passes: int = 105) -> dict[str, Any]:
    return {"sustained_rate": rate, "p50_ms": p50, "p99_ms": p99, "runs": 100,
            "completed": completed, "max_ms": p99,
            "in_flight": {"per_key_max": peak, "passes": passes}}


BASE = _run(300.0, 40.0, 200.0)


def test_overhead_within_the_floor_passes() -> None:
    o = overhead(BASE, _run(290.0, 80.0, 240.0))
    assert round(o["runs_pct"], 2) == 3.33 and o["p99_pct"] == 20.0 and o["p50_pct"] == 100.0
    assert o["limit_held"] and o["ok"]


def test_overhead_over_the_floor_fails_on_runs_or_on_p99() -> None:
    assert not overhead(BASE, _run(300 * (1 - FLOOR_OVERHEAD_PCT / 100) - 1, 40, 200))["ok"]
    assert not overhead(BASE, _run(300.0, 40.0, 200 * (1 + FLOOR_OVERHEAD_PCT / 100) + 1))["ok"]


def test_a_broken_limit_or_lost_runs_fail_whatever_the_speed() -> None:
    assert not overhead(BASE, _run(300.0, 40.0, 200.0, peak=LIMIT + 1))["ok"]
    assert not overhead(BASE, _run(300.0, 40.0, 200.0, peak=None))["limit_held"]
    assert not overhead(BASE, _run(300.0, 40.0, 200.0, completed=99))["ok"]


def test_a_log_read_back_partly_does_not_show_the_limit_held() -> None:
    # Fewer passes read than runs completed: the peak may have been in the unread part.
    assert not overhead(BASE, _run(300.0, 40.0, 200.0, passes=99))["limit_held"]


def test_summary_rows_put_the_run_without_flow_control_beside_each_variant() -> None:
    r = {"rate": 300.0, "keys": 1000,
         "variants": {"plain": BASE, "keys": _run(295.0, 45.0, 210.0),
                      "hot": {"error": "TimeoutError: no warm-up run completed"}}}
    rows = summary_rows(r)
    assert rows[0][1:] == ["295 (+1.7 %)", "300", "<= 25 %", "ok"]
    assert rows[1][1:] == ["45.0 / 210 (+5.0 %)", "40.0 / 200", "<= 25 %", "ok"]
    assert rows[2][1:] == ["error", "-", "-", "FAIL"]


def test_the_app_feeds_distinct_keys_or_one_hot_key() -> None:
    assert len({key_of("keys", i, 1000) for i in range(5000)}) == 1000
    assert {key_of("hot", i, 1000) for i in range(50)} == {"hot"}
    ev = event_maker("hot", 1000)("t", 3, 1234)
    assert (ev.id, ev.ts, ev.data["k"]) == ("t-0000003", 1234, "hot")
