"""The dashboard's pages and login against in-memory fakes (no Kafka): user data is
escaped, the waterfall places attempts and gaps, a login cookie reads but does not
change anything from another origin, and Bearer keys work as before."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from engine.api.dashboard.waterfall import bars
from engine.api.http import make_app
from engine.api.topic_reader import CursorError, decode_cursor, encode_cursor
from engine.api.views import run_view
from engine.runtime.router import Registry, route_invoke
from tests.unit.api.test_http import FakeIngest, FakeQueries, state
from topics.records import InvokeRequested

XSS = "<script>alert(1)</script>"
XSS_OUT = "</script><img src=x onerror=alert(2)>"
HTML = {"Accept": "text/html"}


def xss_run() -> dict[str, Any]:
    s = state("R9")
    s["event"] = {"name": "x/" + XSS, "data": {"who": XSS}, "id": "E9", "ts": 1000}
    s["fn_id"] = "f" + XSS
    s["step_order"] = ["a", "nap"]
    s["steps"] = {"a": {"name": "a" + XSS, "status": "completed", "output": XSS_OUT,
                        "attempts": [{"attempt": 0, "started_at": 1001, "ended_at": 1005}]},
                  "nap": {"name": "nap", "status": "completed", "output": None,
                          "attempts": []}}
    s["timeline"] = [{"at": 1006, "type": "sleep.scheduled", "step_id": "nap"},
                     {"at": 1500, "type": "timer.fired", "step_id": "nap"}]
    s["ended_at"] = 2001
    s["error"] = {"name": "Boom", "message": XSS, "stack": XSS_OUT}
    s["status"] = "failed"
    return s


def serve(test: Any, *, dev: bool = True) -> None:
    async def main() -> None:
        ing = FakeIngest()
        app = make_app(FakeQueries([xss_run(), state("R1")]), ing, dev=dev,
                       event_keys=frozenset(), api_keys=frozenset({"k1"}))
        async with TestClient(TestServer(app)) as client:
            await test(client, ing)
    asyncio.run(main())


def test_pages_escape_user_data() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        for path in ("/", "/runs/R9", "/runs/R9?step=a", "/?q=E9", "/functions"):
            r = await c.get(path)
            body = await r.text()
            assert r.status == 200, path
            assert "<script>alert" not in body and "<img" not in body, path
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        body = await (await c.get("/runs/R9?step=a")).text()
        assert "&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        r = await c.get("/runs/NOPE")
        assert r.status == 404 and "No run NOPE" in await r.text()
        r = await c.get("/?since=yesterday")
        assert r.status == 200 and "neither epoch milliseconds" in await r.text()
        rows = await (await c.get("/ui/runs.json")).json()
        assert [row["run_id"] for row in rows["rows"]] == ["R9", "R1"]
    serve(t)


def test_waterfall_has_attempts_and_sleeps_as_gaps() -> None:
    view = run_view(xss_run())
    got = bars(view, now_ms=5000)
    assert [(b.step_id, b.kind) for b in got] == [("a", "attempt"), ("nap", "sleep")]
    attempt, nap = got
    assert attempt.left == 0.1 and attempt.status == "completed"   # 1001 of 1000..2001
    assert nap.start_ms == 1006 and nap.end_ms == 1500 and not nap.open
    assert 49 < nap.width < 50


def test_a_login_form_that_cannot_be_read_is_a_400() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        for ctype, body in (("multipart/form-data; boundary=x", b"k\xe4\xe7["),
                            ("multipart/form-data", b"--x\r\n")):
            r = await c.post("/login", data=body, headers={"Content-Type": ctype})
            assert r.status == 400, (ctype, await r.text())
            assert "could not be read" in await r.text()
    serve(t, dev=False)


def test_static_files_are_only_the_dashboards_own() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.get("/static/app.js")
        assert r.status == 200 and "javascript" in r.headers["Content-Type"]
        assert "textContent" in await r.text()
        # A name too long for the file system was a 500 (found by the fault campaign).
        for name in ("x" * 4000, "..%2Fapp.py", "nothing.css", "%00"):
            r = await c.get(f"/static/{name}")
            assert r.status == 404, (name, r.status)
    serve(t, dev=True)


def test_login_cookie_reads_and_changes_only_from_this_origin() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        r = await c.get("/functions", headers=HTML)
        assert r.status == 401 and 'name="key"' in await r.text()
        r = await c.get("/v1/runs")  # an API client: JSON, as before
        assert r.status == 401 and "STEPSTREAM_API_KEYS" in (await r.json())["error"]
        assert (await c.get("/static/app.css")).status == 200
        r = await c.post("/login", data={"key": "k2", "next": "/functions"},
                         allow_redirects=False)
        assert r.status == 403 and "not accepted" in await r.text()
        r = await c.post("/login", data={"key": "k1", "next": "//evil.example/"},
                         allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/"
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        c.session.cookie_jar.clear()  # each request below says which cookie it sends
        jar = {"Cookie": "stepstream_key=k1"}
        assert (await c.get("/functions", headers={**jar, **HTML})).status == 200
        assert (await c.get("/v1/runs", headers=jar)).status == 200
        own = f"http://{c.server.host}:{c.server.port}"
        for origin in ({}, {"Origin": "http://evil.example"}, {"Origin": "null"}):
            r = await c.post("/v1/runs/R1/cancel", headers={**jar, **origin})
            assert r.status == 403, origin
        assert ing.cancels == []
        r = await c.post("/v1/runs/R9/cancel", headers={**jar, "Origin": own})
        assert r.status in (202, 409)
        r = await c.get("/", headers={"Cookie": "stepstream_key=old", **HTML})
        assert r.status == 401 and "no longer accepted" in await r.text()
        r = await c.get("/v1/runs", headers={"Cookie": "stepstream_key=old"})
        assert r.status == 401 and "log in again" in (await r.json())["error"]
        # Bearer keys unchanged, with or without Origin.
        r = await c.get("/v1/runs", headers={"Authorization": "Bearer k1"})
        assert r.status == 200
        r = await c.get("/v1/runs", headers={"Authorization": "Bearer k2", **jar})
        assert r.status == 403
    serve(t, dev=False)


def test_invoke_bad_input_is_4xx() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        deep = b'{"data": ' + b'{"a": ' * 600 + b"1" + b"}" * 600 + b"}"
        for body, status in ((b"[1]", 400), (b"{bad", 400), (b'{"data": 3}', 400),
                             (b'{"x": {}}', 400), (deep, 400),
                             (b'{"data": {"n": 1e999}}', 400),
                             (b'{"data": {"n": 99999999999999999999999}}', 400)):
            r = await c.post("/v1/functions/a-f/invoke", data=body)
            assert r.status == status and (await r.json())["error"], body
    serve(t)


def test_cursor_round_trip_and_bad_cursors() -> None:
    upper = {0: 10, 3: 7}
    assert decode_cursor(encode_cursor(upper), 4) == upper
    for bad in ("%%%", "eyJ4Ijo1fQ", encode_cursor({9: 1}), encode_cursor({0: -1})):
        try:
            decode_cursor(bad, 4)
        except CursorError:
            continue
        raise AssertionError(bad)


def test_an_api_invoke_of_a_removed_function_is_dropped_not_crashed() -> None:
    rec = InvokeRequested(fn_id="gone", data={}, event_id="E1", parent={}, ts=1)
    assert route_invoke(rec, Registry(), now_ms=2, backoff_base_ms=100) == []


def test_send_event_nested_too_deeply_is_a_400() -> None:
    # The fault campaign's fuzzer got a 500 from a deeply nested body.
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        # Within the data limit (64 levels): sent. Past it: the limit says so. Past what
        # the JSON decoder itself takes (about 1,000): the decoder's refusal, as a 400.
        for depth, status, says in ((50, 200, None),
                                    (900, 400, "nested deeper than 64 levels"),
                                    (5000, 400, "not valid JSON: nested too deeply"),
                                    (100_000, 400, "not valid JSON: nested too deeply")):
            body = '{"name": "x", "data": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
            r = await c.post("/ui/send-event", data=body.encode())
            assert r.status == status, (depth, r.status, await r.text())
            if says is not None:
                assert says in (await r.json())["error"], depth
        r = await c.post("/ui/send-event", data=b'{"a": ' * 5000)
        assert r.status == 400
    serve(t, dev=True)


def test_pages_say_when_an_engine_did_not_answer() -> None:
    # With several engines, a page built while one is silent lists what the others hold;
    # it has to say that runs are missing rather than look complete.
    from engine.cluster.merge import Gathered, Partial

    missing = Partial(missing_engines=("http://10.0.0.2:8288",), missing_partitions=(2, 3))

    class Silent(FakeQueries):
        def list_runs(self, limit: int, cursor: str | None, flt: Any) -> Gathered:
            return Gathered(super().list_runs(limit, cursor, flt), missing)

        def find_run(self, run_id: str) -> tuple[Any, Partial | None]:
            state = self.get_run(run_id)
            return state, None if state is not None else missing

    async def main() -> None:
        app = make_app(Silent([state("R1")]), FakeIngest(), dev=True,
                       event_keys=frozenset())
        async with TestClient(TestServer(app)) as c:
            for path, status in (("/", 200), ("/functions", 200), ("/runs/ELSEWHERE", 404)):
                r = await c.get(path, headers=HTML)
                page = await r.text()
                assert r.status == status and 'id="partial"' in page, path
                assert "partitions 2, 3 were not read" in page and "10.0.0.2" in page, path
            r = await c.get("/runs/R1", headers=HTML)
            assert r.status == 200 and 'id="partial"' not in await r.text()
            r = await c.get("/ui/runs.json")
            assert "partitions 2, 3" in (await r.json())["partial"]
    asyncio.run(main())
