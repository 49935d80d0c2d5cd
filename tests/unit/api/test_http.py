"""The HTTP API against in-memory fakes (no Kafka)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp.test_utils import TestClient, TestServer

from engine.api.http import event_keys_from_env, make_app
from engine.api.ingest import EventIngest, IngestError, now_ms, prepare_body
from engine.api.views import RunFilter
from topics.catalog import partition_for
from topics.codec import decode
from topics.records import CancelRequested
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

    def list_runs(self, limit: int, cursor: str | None,
                  flt: RunFilter | None) -> list[dict[str, Any]]:
        self.last_filter = flt
        ids = sorted((i for i in self.runs if cursor is None or i < cursor), reverse=True)
        picked = [self.runs[i] for i in ids if flt is None or flt.matches(self.runs[i])]
        return picked[:limit]

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
        self.cancels: list[tuple[str, str, str | None]] = []

    async def send_body(self, body: bytes, seed: str | None = None) -> list[str]:
        batch = prepare_body(body, self.settings, now_ms(), seed)
        self.sent.extend(decode(value) for _, value, _ in batch)
        return [event_id for event_id, *_ in batch]

    async def request_cancel(self, run_id: str, partition_key: str,
                             reason: str | None) -> None:
        self.cancels.append((run_id, partition_key, reason))


class BrokenIngest(FakeIngest):
    async def send_body(self, body: bytes, seed: str | None = None) -> list[str]:
        raise IngestError("event E was not stored: broker down", 503)

    async def request_cancel(self, run_id: str, partition_key: str,
                             reason: str | None) -> None:
        raise IngestError(f"run.cancel for {run_id} was not stored: broker down", 503)


RUNS = [state("R1"), state("R2"), state("R3", "E2")]


def run(test: Callable[[TestClient[Any, Any], FakeIngest], Awaitable[None]], *,
        dev: bool = True, keys: frozenset[str] = frozenset(), ingest: FakeIngest | None = None,
        max_body: int | None = None, runs: list[dict[str, Any]] | None = None) -> None:
    async def main() -> None:
        ing = ingest or FakeIngest()
        app = make_app(FakeQueries(RUNS if runs is None else runs), ing, dev=dev,
                       event_keys=keys, max_body_bytes=max_body)
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
        assert [d["run_id"] for d in page["data"]] == ["R3", "R2"]
        assert page["next_cursor"] == page["next"] == "R2"
        r = await c.get("/v1/runs", params={"limit": "2", "cursor": page["next_cursor"]})
        page = await r.json()
        assert [d["run_id"] for d in page["data"]] == ["R1"] and page["next_cursor"] is None
        # before= is the cursor's older name, still accepted
        r = await c.get("/v1/runs", params={"limit": "2", "before": "R2"})
        assert [d["run_id"] for d in (await r.json())["data"]] == ["R1"]
        r = await c.get("/v1/runs")
        assert len((await r.json())["data"]) == 3
        # a full last page has no next page: the API asks for one more to know
        r = await c.get("/v1/runs", params={"limit": "3"})
        page = await r.json()
        assert len(page["data"]) == 3 and page["next_cursor"] is None and page["next"] is None
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
        assert await (await c.get("/health")).json() == {"status": "ok", "consumer_lag": None}
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


def _runs_for_filters() -> list[dict[str, Any]]:
    out = []
    for i in range(30):
        s = state(f"R{i:02d}")
        s["fn_id"] = "app-a" if i % 3 else "app-b"
        s["status"] = ("running", "completed", "failed", "cancelled", "queued")[i % 5]
        s["requested_at"] = 1_000_000 + i * 1000
        if s["status"] == "running":
            s["worker_started"] = s["requested_at"]  # begun by a worker, not queued
        out.append(s)
    return out


def test_list_runs_filters() -> None:
    runs = _runs_for_filters()

    def expect(pred: Callable[[dict[str, Any]], bool]) -> list[str]:
        return sorted((r["run_id"] for r in runs if pred(r)), reverse=True)

    async def all_pages(c: TestClient[Any, Any], params: dict[str, Any]) -> list[str]:
        got: list[str] = []
        cursor = None
        while True:
            r = await c.get("/v1/runs", params=[*params.items(), ("limit", "4"),
                                                *([("cursor", cursor)] if cursor else [])])
            assert r.status == 200, await r.text()
            page = await r.json()
            ids = [d["run_id"] for d in page["data"]]
            got += ids
            cursor = page["next_cursor"]
            if cursor is None:
                return got
            assert len(ids) == 4 and cursor == ids[-1]  # only the last page is short

    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        assert await all_pages(c, {"function": "app-b"}) == expect(
            lambda r: r["fn_id"] == "app-b")
        assert await all_pages(c, {"status": "failed"}) == expect(
            lambda r: r["status"] == "failed")
        # several statuses: repeated, comma-separated, any case
        both = expect(lambda r: r["status"] in ("failed", "cancelled"))
        r = await c.get("/v1/runs", params=[("status", "failed"), ("status", "Cancelled"),
                                            ("limit", "100")])
        assert [d["run_id"] for d in (await r.json())["data"]] == both
        assert await all_pages(c, {"status": "failed,cancelled"}) == both
        # since inclusive, until exclusive; epoch ms or ISO-8601
        window = expect(lambda r: 1_005_000 <= r["requested_at"] < 1_012_000)
        assert await all_pages(c, {"since": "1005000", "until": "1012000"}) == window
        assert await all_pages(c, {"since": "1970-01-01T00:16:45Z",
                                   "until": "1970-01-01T00:16:52.000+00:00"}) == window
        assert await all_pages(c, {"function": "app-a", "status": "running",
                                   "since": "1003000"}) == expect(
            lambda r: r["fn_id"] == "app-a" and r["status"] == "running"
            and r["requested_at"] >= 1_003_000)
        r = await c.get("/v1/runs", params={"function": "nope"})
        assert await r.json() == {"data": [], "next_cursor": None, "next": None}
    run(t, runs=runs)


def test_list_runs_passes_the_filter() -> None:
    queries = FakeQueries(RUNS)

    async def main() -> None:
        app = make_app(queries, FakeIngest(), dev=True, event_keys=frozenset())
        async with TestClient(TestServer(app)) as c:
            await c.get("/v1/runs", params={"status": "completed"})
            assert queries.last_filter == RunFilter(statuses=frozenset({"completed"}))
            await c.get("/v1/runs", params={"function": "f", "since": "2024-05-01",
                                            "until": "1714564800001"})
            assert queries.last_filter == RunFilter(function="f", since=1_714_521_600_000,
                                                    until=1_714_564_800_001)
    asyncio.run(main())


def test_list_runs_bad_parameters() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        cases: list[tuple[Any, str]] = [
            ({"status": "done"}, "'done' is not a run status"),
            ({"status": ""}, "status must be a run status"),
            ({"status": "running,bogus"}, "'bogus' is not a run status"),
            ({"since": "yesterday"}, "since: 'yesterday' is neither epoch milliseconds"),
            ({"until": "2024-13-01"}, "until:"),
            ({"since": "-5"}, "since:"),
            ({"until": "99999999999999999999999"}, "out of range"),
            ({"since": "2000", "until": "1000"}, "must be before until"),
            ({"since": "1000", "until": "1000"}, "must be before until"),
            ({"function": ""}, "function must be a function id"),
            ({"fucntion": "f"}, "unknown query parameter(s) fucntion"),
            ({"cursor": "R2", "before": "R1"}, "not both"),
            ({"cursor": "x" * 300}, "cursor must be a run id"),
            ([("limit", "2"), ("limit", "3")], "limit is given 2 times"),
            ([("function", "a"), ("function", "b")], "function is given 2 times"),
        ]
        for params, fragment in cases:
            r = await c.get("/v1/runs", params=params)
            got = await r.json()
            assert r.status == 400, (params, got)
            assert got["status"] == 400 and fragment in got["error"], (params, got)
    run(t)


CANCELLABLE = [state("Q1"), state("R9"), state("C1"), state("F1"), state("X1")]
CANCELLABLE[0]["status"] = "queued"
CANCELLABLE[1].update(status="running", partition_key="fn/acct-7")
CANCELLABLE[3]["status"] = "failed"
CANCELLABLE[4]["status"] = "cancelled"


def test_cancel_run() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/v1/runs/R9/cancel", json={"reason": "customer asked"})
        assert r.status == 202
        assert await r.json() == {"run_id": "R9", "status": "cancelling"}
        # no body at all, an empty object and a null reason are all fine
        r = await c.post("/v1/runs/Q1/cancel")
        assert r.status == 202
        r = await c.post("/v1/runs/Q1/cancel", json={})
        assert r.status == 202
        r = await c.post("/v1/runs/Q1/cancel", json={"reason": None})
        assert r.status == 202
        r = await c.post("/v1/runs/Q1/cancel", json={"reason": ""})
        assert r.status == 202
        # keyed by the run's partition key, not its id
        assert ing.cancels == [("R9", "fn/acct-7", "customer asked")] + [("Q1", "Q1", None)] * 4
    run(t, runs=CANCELLABLE)


def test_cancel_run_refused() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/v1/runs/NOPE/cancel")
        assert r.status == 404
        assert await r.json() == {"error": "run NOPE not found", "status": 404}
        for run_id, status in (("C1", "completed"), ("F1", "failed"), ("X1", "cancelled")):
            r = await c.post(f"/v1/runs/{run_id}/cancel", json={"reason": "x"})
            got = await r.json()
            assert r.status == 409 and got["status"] == 409, got
            assert f"run {run_id} is already {status}" in got["error"]
        for body, fragment in [
            (b"{oops", "not valid JSON"),
            (b'["reason"]', "must be a JSON object"),
            (b'{"reason": 5}', "'reason' must be a string"),
            (b'{"reason": "x", "force": true}', "unknown field(s) force"),
            (json.dumps({"reason": "x" * 1001}).encode(), "1000-character limit"),
        ]:
            r = await c.post("/v1/runs/R9/cancel", data=body,
                             headers={"Content-Type": "application/json"})
            got = await r.json()
            assert r.status == 400 and fragment in got["error"], (body, got)
        r = await c.get("/v1/runs/R9/cancel")
        assert r.status == 405
        assert ing.cancels == []
    run(t, runs=CANCELLABLE)


def test_cancel_run_not_stored_is_503() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/v1/runs/R9/cancel")
        got = await r.json()
        assert r.status == 503 and "broker down" in got["error"]
    run(t, runs=CANCELLABLE, ingest=BrokenIngest())


class FakeProducer:
    """Accepts and delivers every record at once, like an always-healthy broker."""

    def __init__(self, fail: bool = False) -> None:
        self.produced: list[dict[str, Any]] = []
        self.fail = fail

    def produce(self, topic: str, *, value: bytes, key: bytes, partition: int,
                on_delivery: Callable[[Any, Any], None]) -> None:
        from confluent_kafka import KafkaError

        self.produced.append({"topic": topic, "value": value, "key": key,
                              "partition": partition})
        on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT) if self.fail else None, None)


def test_ingest_request_cancel_record() -> None:
    settings = Settings(partitions=6, prefix="t.")
    ingest = EventIngest(settings)
    producer = FakeProducer()
    ingest._ensure_producer = lambda: cast(Any, producer)  # type: ignore[method-assign]

    async def main() -> None:
        record = await ingest.request_cancel("R9", "fn/acct-7", "customer asked")
        assert isinstance(record, CancelRequested)
        (sent,) = producer.produced
        assert sent["topic"] == "t.runs" and sent["key"] == b"fn/acct-7"
        assert sent["partition"] == partition_for("fn/acct-7", 6)
        back = decode(sent["value"])
        assert back == record and isinstance(back, CancelRequested)
        assert back.run_id == "R9" and back.by == {"kind": "api", "reason": "customer asked"}
        await ingest.request_cancel("R8", "R8", "")
        second = decode(producer.produced[1]["value"])
        assert isinstance(second, CancelRequested)
        assert second.by == {"kind": "api", "reason": None}

        failing = FakeProducer(fail=True)
        ingest._ensure_producer = lambda: cast(Any, failing)  # type: ignore[method-assign]
        try:
            await ingest.request_cancel("R7", "R7", None)
        except IngestError as exc:
            assert exc.status == 503 and "run.cancel for R7 was not stored" in exc.message
        else:
            raise AssertionError("a failed delivery must raise")
    asyncio.run(main())


def test_input_that_used_to_crash_is_a_4xx_with_a_message() -> None:
    """Issue 7: each of these was a 500 (UnicodeEncodeError, RecursionError,
    OverflowError, a zlib error) and must be a 400 saying what is wrong."""
    deep = b"[" * 5000 + b"]" * 5000
    cases: list[tuple[str, bytes, dict[str, str], str]] = [
        ("/e/k", b'{"name": "a", "data": {"x": "\\ud800"}}', {}, "data.x"),
        ("/e/k", b'{"name": "a", "data": {"\\udfff": 1}}', {}, "not valid Unicode"),
        ("/e/k", b'{"name": "\\ud800"}', {}, "name"),
        ("/e/k", b'{"name": "a", "id": "x\\ud800"}', {}, "id"),
        ("/e/k", deep, {}, "nested too deeply"),
        ("/e/k", b'{"name": "a", "data": {"x": ' + deep + b"}}", {}, "nested too deeply"),
        ("/e/k", json.dumps({"name": "a", "ts": 2**70}).encode(), {}, "'ts' must be"),
        ("/e/k", json.dumps({"name": "a", "ts": 2**63}).encode(), {}, "'ts' must be"),
        ("/e/k", b'{"name": "a"}', {"Content-Encoding": "gzip"}, "Content-Encoding"),
        ("/v1/runs/R1/cancel", b'{"reason": ' + deep + b"}", {}, "nested too deeply"),
        ("/v1/runs/R1/cancel", b'{"reason": "\\ud800"}', {}, "not valid Unicode"),
        ("/v1/runs/R1/cancel", b"{}", {"Content-Encoding": "gzip"}, "Content-Encoding"),
    ]

    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        for path, body, headers, fragment in cases:
            r = await c.post(path, data=body, headers={**headers, "Connection": "close"})
            got = await r.json()
            assert r.status == 400, (path, body[:60], got)
            assert got["status"] == 400 and fragment in got["error"], (body[:60], got)
        assert ing.sent == [] and ing.cancels == []
    run(t, runs=[{**state("R1"), "status": "running"}])


def test_an_event_of_the_year_9999_is_accepted() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/e/k", json={"name": "a", "ts": 253_402_300_799_999})
        assert r.status == 200 and ing.sent[0].ts == 253_402_300_799_999
    run(t)


def test_too_many_events_in_one_request_is_413() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.post("/e/k", json=[{"name": "a"}] * 5001)
        got = await r.json()
        assert r.status == 413 and "over the limit of 5000" in got["error"], got
        assert ing.sent == []
    run(t)


def test_delete_cancels_a_run_as_in_inngest() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.delete("/v1/runs/R9")
        assert r.status == 202
        assert await r.json() == {"run_id": "R9", "status": "cancelling"}
        r = await c.delete("/v1/runs/C1")
        assert r.status == 409
        r = await c.delete("/v1/runs/NOPE")
        assert r.status == 404
        assert ing.cancels == [("R9", "fn/acct-7", None)]
    run(t, runs=CANCELLABLE)


def test_a_runs_trigger_is_its_events() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.get("/v1/runs/R2/trigger")
        data = (await r.json())["data"]
        assert r.status == 200 and [e["id"] for e in data] == ["E1"]
        r = await c.get("/v1/runs/NOPE/trigger")
        assert r.status == 404
    run(t)
