"""Fuzzing the HTTP API (no Kafka): no body, header or path may produce a 5xx.

Events go through the real validation and encoding (:func:`engine.api.ingest.prepare_body`);
only the broker is left out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.api.http import make_app
from tests.unit.api.test_http import FakeIngest, FakeQueries, state

# Lone surrogates are what JSON can spell and UTF-8 cannot encode; hypothesis' text()
# leaves them out unless asked.
_chars = st.one_of(st.sampled_from(["a", "\ud800", "\udfff", "\x00", "\u00e9"]),
                   st.characters())
_text = st.text(_chars, max_size=12)
_ints = st.one_of(st.integers(), st.integers(min_value=2**62, max_value=2**80),
                  st.integers(max_value=-(2**62)))
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), _ints, st.floats(), _text),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_text, inner, max_size=4)),
    max_leaves=20)
_event = st.fixed_dictionaries(
    {"name": st.one_of(st.just("shop/order"), _text, _json)},
    optional={"data": _json, "id": st.one_of(_text, _json), "ts": st.one_of(_ints, _json),
              "v": _json, "user": _json, "other": _json})

# Mostly valid events, so the fuzzing reaches the checks after the field checks.
_valid_event = st.fixed_dictionaries(
    {"name": st.sampled_from(["shop/order", "a"])},
    optional={"data": st.dictionaries(_text, _json, max_size=4), "id": _text,
              "ts": st.integers(min_value=0, max_value=2**64)})


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


_bodies = st.one_of(
    _event.map(lambda e: json.dumps(e).encode()),
    _valid_event.map(lambda e: json.dumps(e).encode()),
    st.lists(_valid_event, max_size=5).map(lambda es: json.dumps(es).encode()),
    st.lists(_event, max_size=5).map(lambda es: json.dumps(es).encode()),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"reason": _json}).map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=900, max_value=6000).map(_deep),
    st.integers(min_value=900, max_value=6000).map(
        lambda n: b'{"name": "a", "data": {"x": ' + _deep(n) + b"}}"),
    st.binary(max_size=300),
)
_headers = st.fixed_dictionaries({}, optional={
    "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity", "zstd", "x"]),
    "Content-Type": st.sampled_from(["application/json", "text/plain", "", "x/y; q=1"]),
    "x-inngest-event-id-seed": st.one_of(
        st.text(max_size=40).filter(lambda s: s.isprintable()),
        st.just("1743130137367,eii2YKXRVTJPuA=="), st.just("0,AAAAAAAAAAAAAA=="),
        st.just(f"{2**70},eii2YKXRVTJPuA==")),
})
_paths = st.sampled_from(["/e/k", "/e/k", "/v1/runs/R1/cancel", "/v1/runs/R2/cancel",
                          "/v1/runs/none/cancel"])


class _Api:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        runs = [{**state("R1"), "status": "running"}, state("R2")]
        app = make_app(FakeQueries(runs), FakeIngest(), dev=True, event_keys=frozenset())
        self.client: TestClient[Any, Any] = TestClient(TestServer(app), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            r = await self.client.post(path, data=body,
                                       headers={**headers, "Connection": "close"})
            text = await r.text()
            return r.status, text
        return self.loop.run_until_complete(go())

    def get(self, path: str) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            r = await self.client.get(path, headers={"Connection": "close"})
            return r.status, await r.text()
        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def api() -> Iterator[_Api]:
    a = _Api()
    yield a
    a.close()


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(path=_paths, body=_bodies, headers=_headers)
def test_no_post_body_or_header_is_a_server_error(api: _Api, path: str, body: bytes,
                                                  headers: dict[str, str]) -> None:
    status, text = api.post(path, body, headers)
    assert status < 500, (path, body[:200], headers, text[:300])
    if status >= 400 and headers.get("Content-Encoding") not in ("deflate", "br", "zstd"):
        # Ours are JSON with a message (aiohttp answers an undecodable deflate/br body
        # itself, in plain text, before any handler runs).
        got = json.loads(text)
        assert got["status"] == status and got["error"], got


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
# "." and ".." are dot-segments: the client resolves them away (/v1/events/./runs is
# GET /v1/events/runs, an event lookup this broker-less app answers with 503).
@given(segment=st.text(_chars, min_size=1, max_size=20).filter(lambda s: s not in (".", "..")),
       query=st.lists(st.tuples(st.sampled_from(["limit", "cursor", "status", "since",
                                                 "until", "function", "x"]), _text),
                      max_size=4))
def test_no_get_path_or_query_is_a_server_error(api: _Api, segment: str,
                                                query: list[tuple[str, str]]) -> None:
    from urllib.parse import quote, urlencode

    seg = quote(segment.encode("utf-8", "surrogatepass"), safe="")
    qs = urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in query])
    for path in (f"/v1/runs/{seg}", f"/v1/events/{seg}/runs", f"/v1/runs?{qs}"):
        status, text = api.get(path)
        assert status < 500, (path, text[:300])
