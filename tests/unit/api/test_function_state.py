"""``GET /v1/functions/{id}``'s flow-control state and ``functions show``'s rendering of
it, read from gate tables built by the real gate code (no broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from engine.api.flow_state import Found, flow_state, read_gates
from engine.api.function_views import flow_lines, function_text, function_view
from engine.flow import slots, throttle
from engine.store import keys
from engine.store.memory import MemTables
from engine.store.partition import PartitionStore
from engine.store.view import BatchView
from topics.records import FunctionRegistered

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z
FN = "shop-charge"
FLOW: dict[str, Any] = {
    "concurrency": [{"limit": 1, "key": "event.data.k", "scope": "fn", "mode": "step"},
                    {"limit": 20, "key": '"openai"', "scope": "env", "mode": "run"}],
    "throttle": {"limit": 2, "period_ms": 6000, "key": None, "burst": 1},
    "rate_limit": {"limit": 3, "period_ms": 10_000, "key": "event.data.k"},
    "priority": {"run": "event.data.vip ? 600 : 0"},
    "singleton": {"key": "event.data.k", "mode": "skip"}}


def state_of(tables: Any, flow: dict[str, Any] | None = FLOW, now: int = T0,
             budget: int = 1000) -> dict[str, Any]:
    found = Found()
    read_gates(tables, FN, flow, now, found, budget)
    return flow_state(found, 1)


def text(view: dict[str, Any]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(function_text(view))
    return console.export_text()


def table_rows(out: str) -> list[list[str]]:
    """The cells of each row of the gates table in ``functions show``'s text."""
    return [[cell.strip() for cell in line.split("│")] for line in out.splitlines()
            if "│" in line]


def busy_tables() -> MemTables:
    t = MemTables()
    for i, run in enumerate(["a1", "a2", "a3"]):  # key a: one runs, two wait
        slots.claim(t, f"{FN}/a", 1, run, 1, i)
    slots.claim(t, f"{FN}/b", 1, "b1", 1, 0)
    slots.claim(t, "env/openai", 20, "a1", 1, 0)
    # Another function whose id extends this one's: never counted as ours.
    slots.claim(t, f"{FN}2/a", 1, "other", 1, 0)
    t.put_run("a1", {"run_id": "a1", "status": "running", "worker_started": T0})
    t.put_value(keys.gate_key("singleton", f"{FN}/a"), {"run": "a1"})
    return t


def test_concurrency_counts_per_key_and_the_env_gate_it_shares() -> None:
    state = state_of(busy_tables())
    assert state["concurrency"] == [
        {"key": "a", "scope": "fn", "running": 1, "queued": 2, "limit": 1},
        {"key": "b", "scope": "fn", "running": 1, "queued": 0, "limit": 1},
        {"key": "openai", "scope": "env", "running": 1, "queued": 0, "limit": 20}]
    assert state["singleton"] == [{"key": "a", "run_id": "a1", "status": "Running"}]
    assert state["truncated"] is False and state["partitions"] == 1
    # Without an env-scoped limit the env gates are another function's business.
    only_fn = state_of(busy_tables(), {"concurrency": FLOW["concurrency"][:1]})
    assert [e["key"] for e in only_fn["concurrency"]] == ["a", "b"]


def test_an_idle_gate_disappears_and_a_function_wide_gate_has_no_key() -> None:
    t = MemTables()
    slots.claim(t, FN, 3, "r1", 1, 0)
    assert state_of(t)["concurrency"] == [
        {"key": None, "scope": "fn", "running": 1, "queued": 0, "limit": 3}]
    slots.release(t, FN, "r1")
    assert state_of(t)["concurrency"] == []


def test_throttle_backlog_and_next_start_and_rate_limit_until_free() -> None:
    t = MemTables()
    # Throttle 2 per 6 s, burst 1: three start at once, the fourth waits 3 s.
    for i in range(4):
        admission = throttle.admit(t, FN, f"r{i}", 1, i, T0, 2, 6000, 1)
        if admission.timer_ms is not None:
            stored = t.get_value(keys.gate_key(throttle.KIND, FN))
            t.put_value(keys.gate_key(throttle.KIND, FN),
                        {**stored, "timer_ms": admission.timer_ms, "cfg": [2, 6000, 1]})
    state = state_of(t)
    assert state["throttle"] == [{"key": None, "queued": 1,
                                  "next_start": "2024-05-01T12:00:03.000Z"}]
    # Rate limit 3 per 10 s on key a: after three starts the next may go in 3.334 s.
    for _ in range(3):
        assert throttle.rate_limit(t, f"{FN}/a", T0, 3, 10_000).allowed
    assert state_of(t)["rate_limit"] == [{"key": "a",
                                          "next_start": "2024-05-01T12:00:03.334Z"}]
    # Long after: both gates are at rest and not listed.
    later = state_of(t, now=T0 + 3_600_000)
    assert later["rate_limit"] == [] and later["throttle"][0]["queued"] == 1


def test_reads_are_bounded_and_say_truncated() -> None:
    t = MemTables()
    for i in range(30):
        slots.claim(t, f"{FN}/k{i:02}", 1, f"r{i}", 1, 0)
    state = state_of(t, budget=10)
    assert len(state["concurrency"]) == 10 and state["truncated"] is True
    exactly = state_of(t, budget=30)  # every gate read, none left: not truncated
    assert len(exactly["concurrency"]) == 30 and exactly["truncated"] is False
    slots.claim(t, FN, 1, "wide", 1, 0)  # one more, read first (the function-wide gate)
    assert state_of(t, budget=30)["truncated"] is True
    assert len(state_of(t)["concurrency"]) == 31


def test_reads_the_committed_rocksdb_tables(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    try:
        view = BatchView(store)
        for i, run in enumerate(["a1", "a2"]):
            slots.claim(view, f"{FN}/a", 1, run, 1, i)
        view.commit(1)
        assert state_of(store)["concurrency"] == [
            {"key": "a", "scope": "fn", "running": 1, "queued": 1, "limit": 1}]
    finally:
        store.close()


def test_functions_show_renders_config_then_a_row_per_key() -> None:
    definition = FunctionRegistered(fn_id=FN, app_id="shop", name="charge", retries=3,
                                    triggers=[{"event": "shop/charge", "expression": None}],
                                    ts=T0, flow=FLOW)
    view = function_view(definition, [], T0)
    assert view["flow"] == FLOW
    view["flow_state"] = state_of(busy_tables())
    out = text(view)
    for line in ("concurrency 1 per key event.data.k",
                 'concurrency 20 per key "openai", scope env, mode run',
                 "throttle 2 per 6s, burst 1", "rate limit 3 per 10s per key event.data.k",
                 "priority event.data.vip ? 600 : 0", "singleton skip per key event.data.k"):
        assert line in out, line
    assert table_rows(out) == [["concurrency", "a", "1", "2", "1", ""],
                               ["concurrency", "b", "1", "0", "1", ""],
                               ["concurrency (env)", "openai", "1", "0", "20", ""],
                               ["singleton", "a", "1", "", "", "run a1 Running"]]

    view["flow_state"] = state_of(MemTables())
    assert "no run holds or waits for a flow-control gate" in text(view)
    view["flow_state"]["truncated"] = True
    assert "more gates than shown" in text(view)
    # No flow control and no gates: nothing about gates at all.
    plain = function_view(FunctionRegistered(fn_id=FN, app_id="shop", name="charge",
                                             retries=3, triggers=[], ts=T0), [], T0)
    plain["flow_state"] = state_of(MemTables(), None)
    assert "gate" not in text(plain) and flow_lines(None) == []
