"""The HTTP API against in-memory fakes (no Kafka)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from engine.http_api import event_keys_from_env, make_app
from engine.ingest import EventIngest, IngestError
from topics.settings import Settings

EVENT = {"name": "shop/order.created", "data": {}, "id": "E1", "ts": 1000}


def state(run_id: str, event_id: str = "E1") -> dict[str, Any]:
    return {"run_id": run_id, "fn_id": "f", "app_id": "a", "partition_key": run_id,
            "event": {**EVENT, "id": event_id}, "events": [], "status": "completed",
            "requested_at": 1000, "started_at": 1001, "ended_at": 1002, "output": 1,
            "error": None, "retries": 0, "attempt": 0, "task_seq": 1, "waiting": None,
            "step_order": [], "steps": {}, "timeline": []}


class FakeQueries:
    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = {r["run_id"]: r for r in runs}

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self.runs.get(run_id)

    def runs_for_event(self, event_id: str) -> list[dict[str, Any]]:
        return [r for r in self.runs.values() if r["event"]["id"] == event_id]

    def list_runs(self, limit: int, before: str | None) -> list[dict[str, Any]]:
        ids = sorted((i for i in self.runs if before is None or i < before), reverse=True)
        return [self.runs[i] for i in ids[:limit]]

    def state_hash(self) -> str:
        return "abc123"

    def functions(self) -> list[dict[str, Any]]:
        return [{"id": "a-f", "app_id": "a", "name": "f", "triggers": [], "retries": 4}]


class FakeIngest:
    """Validates exactly like the real ingest, stores in a list."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._real = EventIngest(self.settings)
        self.sent: list[Any] = []

    async def send(self, raw: list[Any]) -> list[str]:
        batch = self._real.prepare(raw)
        self.sent.extend(e for e, _ in batch)
        return [e.id for e, _ in batch]


class BrokenIngest(FakeIngest):
    async def send(self, raw: list[Any]) -> list[str]:
        raise IngestError("event E was not stored: broker down", 503)


RUNS = [state("R1"), state("R2"), state("R3", "E2")]


def run(test: Callable[[TestClient[Any, Any], FakeIngest], Awaitable[None]], *,
        dev: bool = True, keys: frozenset[str] = frozenset(), ingest: FakeIngest | None = None,
        max_body: int | None = None) -> None:
    async def main() -> None:
        ing = ingest or FakeIngest()
        app = make_app(FakeQueries(RUNS), ing, dev=dev, event_keys=keys,
                       max_body_bytes=max_body)
        async with TestClient(TestServer(app)) as client:
            await test(client, ing)

    asyncio.run(main())


def test_send_one_and_many() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/e/anykey", json={"name": "a", "data": {"x": 1}, "id": "ID1"})
        assert r.status == 200
        assert await r.json() == {"ids": ["ID1"], "status": 200}
        r = await c.post("/e/k", json=[{"name": "a"}, {"name": "b", "ts": 5}])
        body = await r.json()
        assert r.status == 200 and len(body["ids"]) == 2 and len(body["ids"][0]) == 26
        assert [e.name for e in ing.sent] == ["a", "a", "b"] and ing.sent[2].ts == 5
        # Inngest SDK fields we do not keep are accepted
        r = await c.post("/e/k", json={"name": "a", "v": "2024-01-01.1", "user": {}})
        assert r.status == 200
    run(t)


def test_send_bad_input() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        for body, fragment in [
            (b"{not json", "not valid JSON"),
            (b"42", "JSON object"),
            (b'"x"', "JSON object"),
            (b'{"data": {}}', "'name' is required"),
            (b'{"name": ""}', "'name' is required"),
            (b'[{"name": "ok"}, {"name": 3}]', "event 1"),
            (b'{"name": "a", "data": [1]}', "'data' must be a JSON object"),
            (b'{"name": "a", "ts": "yesterday"}', "'ts' must be"),
            (b'{"name": "a", "id": 5}', "'id' must be a string"),
            (b'{"name": "a", "dta": {}}', "unknown field"),
            (b'{"name": "a", "data": {"x": NaN}}', "not a finite number"),
        ]:
            r = await c.post("/e/k", data=body, headers={"Content-Type": "application/json"})
            got = await r.json()
            assert r.status == 400, (body, got)
            assert got["status"] == 400 and fragment in got["error"], (body, got)
        assert ing.sent == []  # nothing of a bad batch was stored
    run(t)


def test_send_too_deep() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        data: Any = 1
        for _ in range(70):
            data = {"d": data}
        r = await c.post("/e/k", json={"name": "a", "data": data})
        assert r.status == 400 and "deeper" in (await r.json())["error"]
    run(t)


def test_send_oversized_event_and_body() -> None:
    settings = Settings(max_event_bytes=1000, max_record_bytes=2000)

    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/e/k", json={"name": "a", "data": {"x": "y" * 1200}})
        got = await r.json()
        assert r.status == 413 and got["status"] == 413 and "1000-byte" in got["error"]
        r = await c.post("/e/k", json=[{"name": "a", "data": {"x": "y" * 500}}] * 20)
        got = await r.json()
        assert r.status == 413 and "8000-byte" in got["error"]  # 4 x max_record_bytes
        assert ing.sent == []
    run(t, ingest=FakeIngest(settings))


def test_body_cap_without_content_length() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 100
        r = await c.post("/e/k", data=chunks())
        assert r.status == 413 and (await r.json())["status"] == 413
    run(t, max_body=500)


def test_event_keys() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/e/wrong", json={"name": "a"})
        got = await r.json()
        assert r.status == 401 and got["status"] == 401 and "key" in got["error"]
        r = await c.post("/e/secret2", json={"name": "a"})
        assert r.status == 200
    run(t, dev=False, keys=event_keys_from_env(" secret1, secret2 ,,"))

    async def none(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/e/any", json={"name": "a"})
        assert r.status == 401 and "STEPSTREAM_EVENT_KEYS" in (await r.json())["error"]
    run(none, dev=False)


def test_ingest_failure_is_503() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/e/k", json={"name": "a"})
        assert r.status == 503 and "broker down" in (await r.json())["error"]
    run(t, ingest=BrokenIngest())


def test_get_run_and_404() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.get("/v1/runs/R2")
        data = (await r.json())["data"]
        assert r.status == 200 and data["run_id"] == "R2" and data["status"] == "Completed"
        assert data["function_id"] == "f" and data["event_id"] == "E1"
        r = await c.get("/v1/runs/NOPE")
        assert r.status == 404
        assert await r.json() == {"error": "run NOPE not found", "status": 404}
    run(t)


def test_event_runs() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.get("/v1/events/E1/runs")
        assert sorted(d["run_id"] for d in (await r.json())["data"]) == ["R1", "R2"]
        r = await c.get("/v1/events/none/runs")
        assert r.status == 200 and await r.json() == {"data": []}
    run(t)


def test_list_runs_paging() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.get("/v1/runs", params={"limit": "2"})
        page = await r.json()
        assert [d["run_id"] for d in page["data"]] == ["R3", "R2"] and page["next"] == "R2"
        r = await c.get("/v1/runs", params={"limit": "2", "before": page["next"]})
        page = await r.json()
        assert [d["run_id"] for d in page["data"]] == ["R1"] and page["next"] is None
        r = await c.get("/v1/runs")
        assert len((await r.json())["data"]) == 3
        for bad in ("0", "1001", "x", "-1"):
            r = await c.get("/v1/runs", params={"limit": bad})
            got = await r.json()
            assert r.status == 400 and "limit" in got["error"], bad
    run(t)


def test_hash_health_unknown() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        assert await (await c.get("/v1/state/hash")).json() == {"hash": "abc123"}
        functions = await (await c.get("/v1/functions")).json()
        assert [f["id"] for f in functions["data"]] == ["a-f"]
        assert await (await c.get("/health")).json() == {"status": "ok"}
        r = await c.get("/nope")
        assert r.status == 404 and (await r.json())["status"] == 404
        r = await c.delete("/health")
        assert r.status == 405 and (await r.json())["status"] == 405
        r = await c.get("/e/k")
        assert r.status == 405
    run(t)


def test_handler_crash_is_json_500() -> None:
    class Crashing(FakeQueries):
        def state_hash(self) -> str:
            raise RuntimeError("boom")

    async def main() -> None:
        app = make_app(Crashing([]), FakeIngest(), dev=True, event_keys=frozenset())
        async with TestClient(TestServer(app)) as c:
            r = await c.get("/v1/state/hash")
            assert r.status == 500 and json.loads(await r.text())["status"] == 500

    asyncio.run(main())
