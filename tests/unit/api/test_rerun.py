"""Re-run over HTTP against in-memory fakes (no Kafka): the command stored, the answer's
shape, and every refusal (unknown run or step, removed function, bad bulk input, no
filter)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from engine.api.http import make_app
from engine.api.rerun import rerun_request
from tests.unit.api.test_http import FakeIngest, FakeQueries, state
from topics.catalog import Catalog
from topics.ids import ulid_ms
from topics.records import Record, RerunRequested


class Queries(FakeQueries):
    def __init__(self, runs: list[dict[str, Any]], registered: set[str]) -> None:
        super().__init__(runs)
        self.registered = registered

    def function(self, fn_id: str) -> dict[str, Any] | None:
        return {"id": fn_id} if fn_id in self.registered else None


class Ingest(FakeIngest):
    def __init__(self) -> None:
        super().__init__()
        self.catalog = Catalog(self.settings)
        self.records: list[tuple[str, str, Record]] = []

    async def send_record(self, topic: str, key: str, record: Record) -> None:
        self.records.append((topic, key, record))


def stepped(run_id: str, status: str = "failed", fn_id: str = "f",
            requested_at: int = 1000) -> dict[str, Any]:
    s = state(run_id)
    s.update(status=status, fn_id=fn_id, requested_at=requested_at,
             step_order=["a", "b", "c"], partition_key="PK-" + run_id,
             steps={sid: {"name": sid, "status": st, "output": out, "error": None,
                          "until_ms": None, "attempts": []}
                    for sid, st, out in [("a", "completed", 1), ("b", "failed", None),
                                         ("c", "completed", 3)]})
    return s


RUNS = [stepped("R1"), stepped("R2", status="completed"), stepped("R3", fn_id="gone"),
        stepped("R4", requested_at=5000)]


def serve(test: Callable[[TestClient[Any, Any], Ingest], Awaitable[None]]) -> None:
    async def main() -> None:
        ingest = Ingest()
        app = make_app(Queries(RUNS, {"f"}), ingest, dev=True, event_keys=frozenset())
        async with TestClient(TestServer(app)) as client:
            await test(client, ingest)

    asyncio.run(main())


def test_rerun_answers_the_new_run_id_and_stores_the_command() -> None:
    async def t(c: TestClient[Any, Any], ing: Ingest) -> None:
        r = await c.post("/v1/runs/R1/rerun")
        body = await r.json()
        assert r.status == 202 and set(body) == {"run_id", "rerun_of"}
        assert body["rerun_of"] == "R1" and len(body["run_id"]) == 26
        assert ulid_ms(body["run_id"]) > 0  # a fresh ULID
        [(topic, key, rec)] = ing.records
        assert topic == ing.catalog.events and key == body["run_id"]
        assert isinstance(rec, RerunRequested)
        assert (rec.rerun_of, rec.rerun_of_key, rec.fn_id, rec.kept) == (
            "R1", "PK-R1", "f", {})
        # Another re-run of the same run is another new run.
        r2 = await (await c.post("/v1/runs/R1/rerun", json={})).json()
        assert r2["run_id"] != body["run_id"]
    serve(t)


def test_from_step_keeps_the_steps_completed_before_it() -> None:
    async def t(c: TestClient[Any, Any], ing: Ingest) -> None:
        r = await c.post("/v1/runs/R1/rerun", json={"from_step": "c"})
        assert r.status == 202
        rec = ing.records[-1][2]
        assert isinstance(rec, RerunRequested)
        # a completed before c: kept; b failed: run again.
        assert rec.kept == {"a": {"name": "a", "output": 1}} and rec.kept_order == ["a"]
        assert rec.from_step == "c"
    serve(t)


def test_rerun_refusals() -> None:
    async def t(c: TestClient[Any, Any], ing: Ingest) -> None:
        for path, body, status, fragment in [
            ("/v1/runs/R1/rerun", {"from_step": "zz"}, 400, "its steps: a, b, c"),
            ("/v1/runs/R1/rerun", {"from_step": 3}, 400, "'from_step' must be"),
            ("/v1/runs/R1/rerun", {"step": "a"}, 400, "unknown field(s) step"),
            ("/v1/runs/R1/rerun", [1], 400, "JSON object"),
            ("/v1/runs/NOPE/rerun", {}, 404, "run NOPE not found"),
            ("/v1/runs/R3/rerun", {}, 409, "no longer registered"),
        ]:
            r = await c.post(path, json=body)
            got = await r.json()
            assert r.status == status and fragment in got["error"], (path, body, got)
        assert ing.records == []
    serve(t)


def test_bulk_dry_run_then_real() -> None:
    async def t(c: TestClient[Any, Any], ing: Ingest) -> None:
        flt = {"function_id": "f", "status": "failed", "started_after": 500,
               "started_before": 4000}
        r = await c.post("/v1/reruns", json={**flt, "dry_run": True})
        body = await r.json()
        assert r.status == 200 and body["matched"] == 1 and body["run_ids"] == ["R1"]
        assert ing.records == []
        body = await (await c.post("/v1/reruns", json=flt)).json()
        assert body["matched"] == 1 and body["failed"] == []
        [one] = body["reruns"]
        assert one["rerun_of"] == "R1" and one["run_id"] == ing.records[0][2].run_id
        # A run whose function is gone is reported, the others are re-run.
        body = await (await c.post("/v1/reruns", json={"status": ["failed"]})).json()
        assert body["matched"] == 3 and len(body["reruns"]) == 2
        assert [f["rerun_of"] for f in body["failed"]] == ["R3"]
    serve(t)


def test_bulk_refusals() -> None:
    async def t(c: TestClient[Any, Any], ing: Ingest) -> None:
        for body, fragment in [
            ({}, "needs a filter"),
            ({"dry_run": True}, "needs a filter"),
            ({"all": "yes"}, "'all' must be true or false"),
            ({"status": "sleeping"}, "not a run status"),
            ({"status": []}, "'status' must be"),
            ({"function_id": ""}, "'function_id' must be"),
            ({"started_after": "yesterday"}, "started_after"),
            ({"started_after": 5, "started_before": 5}, "must be before"),
            ({"function": "f"}, "unknown field(s) function"),
        ]:
            r = await c.post("/v1/reruns", json=body)
            got = await r.json()
            assert r.status == 400 and fragment in got["error"], (body, got)
        assert ing.records == []
        r = await c.post("/v1/reruns", json={"all": True, "dry_run": True})
        assert (await r.json())["matched"] == len(RUNS)
    serve(t)


def test_kept_steps_follow_the_order_they_were_recorded_in() -> None:
    # b was met after a but recorded first (parallel lines): a RACE over them picks b,
    # and so must the re-run, which sees the kept steps in this order.
    original = {**state("R1"), "step_order": ["a", "b", "c"], "steps": {
        "b": {"name": "b", "status": "completed", "output": 2},
        "a": {"name": "a", "status": "completed", "output": 1},
        "c": {"name": "c", "status": "failed", "output": None}}}
    request = rerun_request(original, "N1", "c", 5000)
    assert request.kept_order == ["b", "a"]
    assert request.kept == {"a": {"name": "a", "output": 1}, "b": {"name": "b", "output": 2}}


def test_bulk_paths_name_functions_as_inngest_does_and_refuse_unknown_ones() -> None:
    # Inngest's REST API takes app_id and the bare function_id; an unknown function was
    # answered 200 "matched: 0", which looks like success while doing nothing.
    runs = [stepped("R1", fn_id="shop-charge", status="running"), stepped("R2", fn_id="x")]
    runs[0]["app_id"] = "shop"

    async def main() -> None:
        app = make_app(Queries(runs, {"shop-charge", "x"}), Ingest(), dev=True,
                       event_keys=frozenset())
        async with TestClient(TestServer(app)) as c:
            for body in ({"app_id": "shop", "function_id": "charge"},
                         {"function_id": "shop-charge"},
                         {"app_id": "shop", "function_id": "shop-charge"}):
                r = await c.post("/v1/cancellations", json={**body, "dry_run": True})
                assert r.status == 200, (body, await r.text())
                answer = await r.json()
                assert answer["matched"] == 1 and answer["run_ids"] == ["R1"], body
            for path, body in (("/v1/cancellations", {"function_id": "charge"}),
                               ("/v1/cancellations", {"app_id": "a", "function_id": "nosuch"}),
                               ("/v1/reruns", {"function_id": "nosuch"})):
                r = await c.post(path, json=body)
                assert r.status == 404, (path, body, r.status)
                assert "no function" in (await r.json())["error"]
            r = await c.post("/v1/reruns", json={"function_id": "x", "dry_run": True})
            assert r.status == 200 and (await r.json())["run_ids"] == ["R2"]

    asyncio.run(main())
