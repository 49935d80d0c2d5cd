"""Run listing over real RocksDB partition stores (no broker)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from engine.api import queries as queries_mod
from engine.api.queries import Queries, RunFilter, list_runs
from engine.store.partition import PartitionStore
from engine.store.view import BatchView
from topics.ids import new_ulid

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
T0 = 1_714_564_800_000


def make_state(run_id: str, fn_id: str, status: str, requested_at: int) -> dict[str, Any]:
    return {"run_id": run_id, "fn_id": fn_id, "app_id": "a", "partition_key": run_id,
            "event": {"name": "e", "data": {}, "id": "E-" + run_id, "ts": requested_at},
            "events": [], "status": status, "requested_at": requested_at,
            "started_at": None, "ended_at": None, "output": None, "error": None,
            "retries": 0, "attempt": 0, "task_seq": 0, "waiting": None,
            "step_order": [], "steps": {}, "timeline": [],
            # A running run is one a worker has begun (else the views say queued).
            "worker_started": requested_at if status == "running" else None}


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[PartitionStore]]:
    opened = [PartitionStore(tmp_path / f"runs-{p}") for p in range(3)]
    yield opened
    for s in opened:
        s.close()


def fill(stores: list[PartitionStore], n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` runs spread over the stores, written through the fold's BatchView. Every
    50th run is of function "rare"; times run forward with the run ids."""
    rng = random.Random(seed)
    views = [BatchView(s) for s in stores]
    states = []
    for i in range(n):
        at = T0 + i * 1000
        run_id = new_ulid(at)
        fn = "rare" if i % 50 == 7 else rng.choice(("shop-a", "shop-b"))
        state = make_state(run_id, fn, STATUSES[i % 5], at + rng.randrange(0, 500))
        rng.choice(views).put_run(run_id, state)
        states.append(state)
    for v in views:
        v.commit(0)
    return states


def newest_first(states: list[dict[str, Any]], flt: RunFilter | None = None) -> list[str]:
    return sorted((s["run_id"] for s in states if flt is None or flt.matches(s)),
                  reverse=True)


def pages(stores: list[PartitionStore], limit: int, flt: RunFilter | None
          ) -> list[list[str]]:
    """Walk every page like the API does (ask for one more to know if a page follows)."""
    out: list[list[str]] = []
    cursor = None
    while True:
        got = [s["run_id"] for s in list_runs(stores, limit + 1, cursor, flt)]
        out.append(got[:limit])
        if len(got) <= limit:
            return out
        cursor = got[limit - 1]


def test_newest_first_merged_across_partitions(stores: list[PartitionStore]) -> None:
    states = fill(stores, 40)
    got = [s["run_id"] for s in list_runs(stores, 100)]
    assert got == newest_first(states)
    assert [s["run_id"] for s in list_runs(stores, 5)] == newest_first(states)[:5]
    cursor = newest_first(states)[9]
    assert [s["run_id"] for s in list_runs(stores, 5, cursor)] == newest_first(states)[10:15]
    assert list_runs(stores, 5, newest_first(states)[-1]) == []
    assert list_runs(stores, 0) == []


def test_paging_walks_every_run_once(stores: list[PartitionStore]) -> None:
    # More runs than one scan chunk per store, so scans resume after releasing the lock.
    states = fill(stores, 1200)
    walked = pages(stores, 100, None)
    assert [len(p) for p in walked] == [100] * 12  # no empty page at the end
    assert [r for p in walked for r in p] == newest_first(states)


@pytest.mark.parametrize("flt", [
    RunFilter(function="rare"),  # 1 in 50: pages must keep scanning to fill up
    RunFilter(statuses=frozenset({"failed"})),
    RunFilter(statuses=frozenset({"failed", "cancelled"}), function="shop-a"),
    RunFilter(since=T0 + 300_000, until=T0 + 700_000),
    RunFilter(function="rare", since=T0 + 100_000),
    RunFilter(function="no-such-function"),
])
def test_filters_fill_pages(stores: list[PartitionStore], flt: RunFilter) -> None:
    states = fill(stores, 1200)
    expected = newest_first(states, flt)
    walked = pages(stores, 7, flt)
    assert [r for p in walked for r in p] == expected
    # only the last page is short: a filter never makes a page return fewer than asked
    # while more matching runs exist
    assert all(len(p) == 7 for p in walked[:-1])
    assert 1 <= len(walked[-1]) <= 7 if expected else walked == [[]]


def test_filter_bounds() -> None:
    s = make_state("R", "f", "running", 1000)
    assert RunFilter().matches(s)
    assert RunFilter(since=1000).matches(s) and not RunFilter(since=1001).matches(s)
    assert RunFilter(until=1001).matches(s) and not RunFilter(until=1000).matches(s)
    assert not RunFilter(function="g").matches(s)
    assert RunFilter(statuses=frozenset({"running", "queued"})).matches(s)
    assert not RunFilter(statuses=frozenset({"queued"})).matches(s)
    old = {k: v for k, v in s.items() if k != "requested_at"}  # no time: no time match
    assert RunFilter(function="f").matches(old) and not RunFilter(since=0).matches(old)


def test_small_scan_chunks(stores: list[PartitionStore], monkeypatch: pytest.MonkeyPatch
                           ) -> None:
    states = fill(stores, 60)
    monkeypatch.setattr(queries_mod, "SCAN_CHUNK", 2)
    flt = RunFilter(statuses=frozenset({"completed"}))
    assert [s["run_id"] for s in list_runs(stores, 1000, None, flt)] == newest_first(
        states, flt)
    cursor = newest_first(states)[30]
    assert [s["run_id"] for s in list_runs(stores, 1000, cursor)] == newest_first(
        states)[31:]


def test_closed_store_is_skipped(stores: list[PartitionStore]) -> None:
    states = fill(stores, 30)
    gone = stores[1]
    on_gone = set(gone.run_ids())
    assert on_gone
    gone.close()
    got = [s["run_id"] for s in list_runs(stores, 100)]
    assert got == [r for r in newest_first(states) if r not in on_gone]


def test_queries_object(stores: list[PartitionStore]) -> None:
    states = fill(stores, 20)

    class FakeProcessor:
        def owned_stores(self) -> list[PartitionStore]:
            return stores

    q = Queries(cast(Any, FakeProcessor()))
    flt = RunFilter(statuses=frozenset({"queued", "running"}))
    assert [s["run_id"] for s in q.list_runs(3, None, flt)] == newest_first(states, flt)[:3]
    one = states[4]
    assert q.get_run(one["run_id"]) == one
