"""The dashboard's runs page with 10,000 runs in the state: how long the first page
takes to render, through HTTP, as a browser asks for it.

The state is 10,000 run states (3 steps and a timeline each, in the fold's shape) in 4
RocksDB partition stores read by the same code as the engine's queries
(:func:`engine.api.queries.list_runs`); no broker is needed, since the page reads only
run state. ``python -m bench.dashboard [--runs N] [--requests N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rocksdict import WriteBatch

from engine.api.http import make_app
from engine.api.queries import list_runs
from engine.api.views import RunFilter
from engine.store import keys
from engine.store.partition import PartitionStore, pack
from topics.ids import new_ulid

STATUSES = ("completed", "completed", "completed", "failed", "running", "cancelled")


def _state(i: int, now: int) -> dict[str, Any]:
    at = now - (10_000 - i) * 1000
    run_id = new_ulid(at)
    status = STATUSES[i % len(STATUSES)]
    steps = {f"s{k}": {"name": f"step-{k}", "status": "completed", "output": {"k": k, "i": i},
                       "attempts": [{"attempt": 0, "started_at": at + 10 * k,
                                     "ended_at": at + 10 * k + 8}]} for k in range(3)}
    timeline = [{"at": at, "type": "run.started"}] + [
        {"at": at + 10 * k + 8, "type": "step.completed", "step_id": f"s{k}"} for k in range(3)]
    return {"run_id": run_id, "fn_id": f"app-fn{i % 5}", "app_id": "app",
            "status": status, "partition_key": run_id,
            "event": {"id": new_ulid(at), "name": "bench/event", "data": {"i": i}, "ts": at},
            "requested_at": at, "started_at": at + 1, "worker_started": at + 1,
            "ended_at": at + 40 if status != "running" else None, "attempt": 0,
            "steps": steps, "step_order": list(steps), "timeline": timeline,
            "output": {"i": i} if status == "completed" else None, "task_seq": 2}


class StoreQueries:
    """The engine's run queries over a set of stores (no processor)."""

    def __init__(self, stores: list[PartitionStore]) -> None:
        self.stores = stores

    def list_runs(self, limit: int, cursor: str | None,
                  flt: RunFilter | None) -> list[dict[str, Any]]:
        return list_runs(self.stores, limit, cursor, flt)

    def functions(self) -> list[dict[str, Any]]:
        return []

    def get_run(self, run_id: str) -> None:
        return None

    def runs_for_event(self, event_id: str) -> list[dict[str, Any]]:
        return []


def fill(folder: Path, runs: int, partitions: int = 4) -> list[PartitionStore]:
    stores = [PartitionStore(folder / f"runs-{p}") for p in range(partitions)]
    batches = [WriteBatch(raw_mode=True) for _ in stores]
    now = int(time.time() * 1000)
    for i in range(runs):
        state = _state(i, now)
        batches[i % partitions].put(keys.run_key(state["run_id"]), pack(state))
    for store, batch in zip(stores, batches, strict=True):
        store.write(batch)
    return stores


async def _measure(stores: list[PartitionStore], requests: int) -> dict[str, Any]:
    from aiohttp.test_utils import TestClient, TestServer

    app = make_app(StoreQueries(stores), object(), dev=True,  # type: ignore[arg-type]
                   event_keys=frozenset())
    times: list[float] = []
    async with TestClient(TestServer(app)) as client:
        for i in range(requests + 2):
            t0 = time.perf_counter()
            resp = await client.get("/", headers={"Accept": "text/html"})
            body = await resp.text()
            elapsed = (time.perf_counter() - t0) * 1000
            assert resp.status == 200 and body.count("<tr data-run=") == 50, resp.status
            if i >= 2:  # the first two warm the template cache and RocksDB's block cache
                times.append(elapsed)
    times.sort()
    return {"requests": requests, "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
            "max_ms": round(times[-1], 1), "rows": 50}


def bench_dashboard(runs: int = 10_000, requests: int = 30) -> dict[str, Any]:
    """Render the runs page's first page ``requests`` times with ``runs`` runs stored."""
    with tempfile.TemporaryDirectory(prefix="stepstream-dash-") as tmp:
        stores = fill(Path(tmp), runs)
        try:
            out = asyncio.run(_measure(stores, requests))
        finally:
            for store in stores:
                store.close()
    return {"runs": runs, **out}


def print_dashboard(r: dict[str, Any]) -> None:
    print(f"  runs page, first page of {r['rows']} with {r['runs']} runs stored: "
          f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, max {r['max_ms']} ms "
          f"({r['requests']} requests over HTTP)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=30)
    args = p.parse_args()
    print_dashboard(bench_dashboard(args.runs, args.requests))


if __name__ == "__main__":
    main()


def bench_dashboard_section() -> dict[str, Any]:
    """Section 9 of :mod:`bench.all`: measure, and print the figures."""
    print("\n== 9. dashboard: the runs page's first page with 10000 runs", flush=True)
    result = bench_dashboard()
    print_dashboard(result)
    return result

