"""The batching benchmark's own logic (bench/batch.py), without a broker: which run each
event started in, read from first tasks, and the figures and verdict taken from it."""

from __future__ import annotations

from typing import Any

import msgpack

from bench.batch import FLOOR_ABSORBED, Starts, absorption, passed, summary_rows
from bench.batch_app import event_maker


def _task(run_id: str, seq: int, events: list[dict[str, Any]], event: dict[str, Any]
          ) -> bytes:
    return msgpack.packb({"k": "task", "run_id": run_id, "seq": seq, "events": events,
                          "event": event})


def test_a_batch_runs_first_task_places_each_of_its_events() -> None:
    s = Starts()
    evs = [{"id": f"e{i}", "ts": 1000 + i} for i in range(3)]
    assert s.extract(_task("r1", 1, evs, evs[0])) == "r1"
    assert s.run_of == {"e0": "r1", "e1": "r1", "e2": "r1"}
    assert s.ts["e2"] == 1002


def test_a_run_without_a_batch_places_its_one_event() -> None:
    s = Starts()
    assert s.extract(_task("r2", 1, [], {"id": "solo", "ts": 5})) == "r2"
    assert s.run_of == {"solo": "r2"}


def test_later_tasks_and_other_records_start_nothing() -> None:
    s = Starts()
    assert s.extract(_task("r1", 2, [], {"id": "e0", "ts": 1})) is None
    assert s.extract(msgpack.packb({"k": "task.cancelled", "run_id": "r1"})) is None
    assert s.extract(b"\xc1 not msgpack") is None
    assert s.run_of == {}


def _starts(placed: dict[str, str]) -> Starts:
    s = Starts()
    s.run_of.update(placed)
    return s


def test_absorption_counts_events_in_started_runs_from_the_first_send() -> None:
    sent = {f"e{i}": 10_000 for i in range(4)}
    starts = _starts({"e0": "r1", "e1": "r1", "e2": "r2", "e3": "r3"})
    # r3 was dispatched but its start is not in the observer's copy: not absorbed.
    got = absorption(sent, starts, {"r1": 10.5, "r2": 12.0}, t0=10.0)
    assert (got["absorbed"], got["runs"], got["elapsed_s"]) == (3, 2, 2.0)
    assert got["events_per_s"] == 1.5 and got["runs_per_s"] == 1.0
    assert got["events_per_run"] == 1.5
    assert got["accepted_to_start_ms"] == {"p50": 500.0, "p99": 2000.0, "max": 2000.0}


def test_absorption_of_nothing_has_no_rates() -> None:
    got = absorption({"e0": 1}, Starts(), {}, t0=1.0)
    assert got["absorbed"] == 0 and "events_per_s" not in got


def test_the_floor_needs_every_event_absorbed_fast_enough() -> None:
    fast = {"events": 100, "absorbed": 100, "events_per_s": float(FLOOR_ABSORBED)}
    assert passed(fast)
    assert not passed({**fast, "absorbed": 99})
    assert not passed({**fast, "events_per_s": FLOOR_ABSORBED - 1.0})
    assert not passed({"error": "ConnectionError"})


def test_summary_rows_put_the_run_without_batching_beside_the_batched_one() -> None:
    ours = {"events": 100, "absorbed": 100, "events_per_s": 25_000.0, "runs_per_s": 250.0,
            "accepted_to_start_ms": {"p99": 900.0}}
    base = {"events": 100, "absorbed": 100, "events_per_s": 7000.0, "runs_per_s": 7000.0,
            "accepted_to_start_ms": {"p99": 650.0}}
    r = {"events": 100, "max_size": 100, "variants": {"batched": ours, "plain": base}}
    rows = summary_rows(r)
    assert rows[0][1:] == ["25,000", "7,000", f">= {FLOOR_ABSORBED:,}", "ok"]
    assert rows[1][1:3] == ["250", "7,000"]
    assert rows[2][1:3] == ["900", "650"]
    r["variants"]["batched"] = {"error": "TimeoutError"}
    assert summary_rows(r)[0][1:] == ["error", "7,000", f">= {FLOOR_ABSORBED:,}", "FAIL"]


def test_the_app_stamps_each_event_with_the_ts_it_is_sent_with() -> None:
    ev = event_maker("batched")("t", 3, 1234)
    assert (ev.name, ev.id, ev.ts) == ("bench/batch.batched", "t-0000003", 1234)
