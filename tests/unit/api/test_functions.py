"""The functions paths of the HTTP API and the function view, without Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from rich.console import Console

from engine.api.function_views import function_text, function_view, functions_table
from engine.api.http import make_app
from engine.api.ingest import IngestError
from topics.cron import parse_cron
from topics.records import FunctionRegistered

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z (a Wednesday)
REPORT = FunctionRegistered(fn_id="cat-report", app_id="cat", name="report", retries=2,
                            triggers=[{"cron": "0 9 * * *"},
                                      {"event": "cat/report", "expression": "event.data.x > 1"}],
                            ts=T0, idempotency="event.data.id")


def test_function_view_and_its_text() -> None:
    view = function_view(REPORT, [parse_cron("0 9 * * *")], T0)
    assert view == {
        "id": "cat-report", "app_id": "cat", "name": "report", "retries": 2,
        "triggers": REPORT.triggers, "cancel": [], "timeouts": None,
        "idempotency": "event.data.id", "registered_at": "2024-05-01T12:00:00.000Z",
        "next_cron": "2024-05-02T09:00:00.000Z", "flow": None}
    assert function_view(REPORT, [], T0)["next_cron"] is None
    console = Console(width=200, record=True, color_system=None)
    console.print(functions_table([view]))
    console.print(function_text(view))
    out = console.export_text()
    row = next(line for line in out.splitlines() if "cat-report" in line)
    assert "cron 0 9 * * *" in row and "2024-05-02T09:00:00.000Z" in row
    assert "trigger event cat/report if event.data.x > 1" in out
    assert "idempotency event.data.id" in out and "retries 2" in out


class Queries:
    def __init__(self) -> None:
        self.registry = {"cat-report": function_view(REPORT, [], T0)}

    def functions(self) -> list[dict[str, Any]]:
        return list(self.registry.values())

    def function(self, fn_id: str) -> dict[str, Any] | None:
        return self.registry.get(fn_id)

    def function_detail(self, fn_id: str) -> dict[str, Any] | None:
        view = self.registry.get(fn_id)
        return None if view is None else {**view, "flow_state": {"concurrency": []}}


class Ingest:
    def __init__(self, fail: bool = False) -> None:
        self.removed: list[str] = []
        self.fail = fail

    async def remove_function(self, fn_id: str) -> None:
        if self.fail:
            raise IngestError(f"removal of function {fn_id} was not stored: down", 503)
        self.removed.append(fn_id)


def run(test: Callable[[TestClient[Any, Any], Ingest], Awaitable[None]],
        ingest: Ingest | None = None) -> None:
    async def main() -> None:
        ing = ingest or Ingest()
        app = make_app(Queries(), ing, dev=True,  # type: ignore[arg-type]
                       event_keys=frozenset())
        async with TestClient(TestServer(app)) as client:
            await test(client, ing)

    asyncio.run(main())


def test_get_functions_and_one_function() -> None:
    async def t(c: TestClient[Any, Any], ing: Ingest) -> None:
        r = await c.get("/v1/functions")
        assert r.status == 200 and [f["id"] for f in (await r.json())["data"]] == ["cat-report"]
        r = await c.get("/v1/functions/cat-report")
        data = (await r.json())["data"]
        assert r.status == 200 and data["retries"] == 2
        assert data["flow_state"] == {"concurrency": []}  # the detail, with gate state
        r = await c.get("/v1/functions/cat-nope")
        body = await r.json()
        assert r.status == 404 and body["status"] == 404
        assert body["error"].startswith("no function 'cat-nope' is registered")
    run(t)


def test_delete_function() -> None:
    async def t(c: TestClient[Any, Any], ing: Ingest) -> None:
        r = await c.delete("/v1/functions/cat-nope")
        assert r.status == 404 and ing.removed == []
        r = await c.delete("/v1/functions/cat-report")
        assert r.status == 200
        assert await r.json() == {"data": {"id": "cat-report", "status": "removed"}}
        assert ing.removed == ["cat-report"]
    run(t)

    async def broken(c: TestClient[Any, Any], ing: Ingest) -> None:
        r = await c.delete("/v1/functions/cat-report")
        assert r.status == 503 and "not stored" in (await r.json())["error"]
    run(broken, Ingest(fail=True))
