"""ClusterQueries and the peer table against real HTTP peers in this process (no Kafka):
engines with in-memory run states, the peer endpoint, keys, a peer that hangs."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.api.http import make_app
from engine.api.views import RunFilter
from engine.cli.devbroker import free_port
from engine.cluster.peers import Advert, Peers, advertised_url, decode_advert
from engine.cluster.queries import ClusterQueries, add_routes, args_from_wire, wire_args
from tests.unit.api.test_http import FakeIngest, FakeQueries, state
from topics.codec import packb
from topics.settings import Settings

KEY = "k1"
PARTITIONS = 4


class Local(FakeQueries):
    """One engine's own partitions: its runs, and a function's flow state."""

    def function_detail(self, fn_id: str) -> dict[str, Any] | None:
        if fn_id != "a-f":
            return None
        return {"id": "a-f", "flow_state": {
            "concurrency": [{"key": f"k{len(self.runs)}", "scope": "fn", "running": 1,
                             "queued": 0, "limit": 1}],
            "throttle": [], "rate_limit": [], "singleton": [], "partitions": 2,
            "truncated": False}}


class Table:
    """A peer table that lists fixed URLs."""

    def __init__(self, url: str, peers: list[str]) -> None:
        self.url = url
        self.peers = peers

    def live(self) -> list[Advert]:
        return [Advert(u, frozenset(), 0, 1000) for u in self.peers]


def engine(url: str, peers: list[str], runs: list[dict[str, Any]], owned: list[int],
           timeout_s: float = 2.0) -> ClusterQueries:
    return ClusterQueries(Local(runs), lambda: owned, Table(url, peers),
                          partitions=PARTITIONS, timeout_s=timeout_s, api_key=KEY)


def serve(make: Callable[[str], ClusterQueries],
          body: Callable[[ClusterQueries, TestClient], Awaitable[None]]) -> None:
    """Serve the engine ``make(url)`` builds (its API, with keys) and run ``body``."""
    async def main() -> None:
        port = free_port()
        cq = make(f"http://127.0.0.1:{port}")
        app = make_app(cq, FakeIngest(), dev=False, event_keys=frozenset(),
                       api_keys=frozenset({KEY}))
        add_routes(app, cq)
        async with TestClient(TestServer(app, port=port)) as client:
            await body(cq, client)
        cq.close()
    asyncio.run(main())


def test_runs_on_a_peer_are_found_listed_and_flagged_complete() -> None:
    mine = [state("01A", "E1"), state("01C", "E2")]
    theirs = [state("01B", "E1"), state("01D", "E3")]

    async def body(peer: ClusterQueries, _client: TestClient) -> None:
        me = engine("http://me", [str(peer.peers.url)], mine, [0, 1])
        try:
            assert (await asyncio.to_thread(me.get_run, "01D"))["run_id"] == "01D"
            listed = await asyncio.to_thread(me.list_runs, 3, None, None)
            assert [r["run_id"] for r in listed] == ["01D", "01C", "01B"]
            assert listed.partial is None
            below = await asyncio.to_thread(me.list_runs, 10, "01C", RunFilter())
            assert [r["run_id"] for r in below] == ["01B", "01A"]
            by_event = await asyncio.to_thread(me.runs_for_event, "E1")
            assert [r["run_id"] for r in by_event] == ["01A", "01B"]
            detail = await asyncio.to_thread(me.function_detail, "a-f")
            assert detail is not None and detail["flow_state"]["partitions"] == 4
            assert len(detail["flow_state"]["concurrency"]) == 2
            assert await asyncio.to_thread(me.find_run, "01Z") == (None, None)
            assert me.state_hash() == "abc123"  # the rest answers from this engine
        finally:
            me.close()
    serve(lambda url: engine(url, [], theirs, [2, 3]), body)


def test_a_peer_with_another_key_is_left_out_and_the_answer_is_partial() -> None:
    async def body(peer: ClusterQueries, _client: TestClient) -> None:
        me = engine("http://me", [str(peer.peers.url)], [state("01A")], [0, 1])
        me.api_key = "not-the-key"
        try:
            listed = await asyncio.to_thread(me.list_runs, 10, None, None)
            assert [r["run_id"] for r in listed] == ["01A"]
            assert listed.partial is not None
            assert listed.partial.missing_engines == (peer.peers.url,)
            assert listed.partial.missing_partitions == (2, 3)
        finally:
            me.close()
    serve(lambda url: engine(url, [], [state("01B")], [2, 3]), body)


def test_a_hung_peer_costs_the_timeout_and_no_more() -> None:
    with socket.socket() as hung:  # accepts connections (backlog), never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        me = engine("http://me", [url], [state("01A")], [0, 1], timeout_s=0.5)
        try:
            started = time.monotonic()
            found, partial = me.find_run("01B")
            assert found is None and partial is not None
            assert partial.missing_engines == (url,)
            assert time.monotonic() - started < 0.5 + 0.4
            started = time.monotonic()
            listed = me.list_runs(10, None, None)
            assert [r["run_id"] for r in listed] == ["01A"] and listed.partial is not None
            assert time.monotonic() - started < 0.5 + 0.4
            started = time.monotonic()
            assert me.get_run("01A") is not None  # its own: the peers are not asked
            assert time.monotonic() - started < 0.2
        finally:
            me.close()


def test_the_api_says_a_missing_run_may_be_on_an_engine_that_did_not_answer() -> None:
    silent = "http://127.0.0.1:9"  # nothing listens: refused at once

    async def body(me: ClusterQueries, client: TestClient) -> None:
        auth = {"Authorization": f"Bearer {KEY}"}
        resp = await client.get("/v1/runs/01B", headers=auth)
        got = await resp.json()
        assert resp.status == 404 and got["partial"] is True
        assert got["missing_engines"] == [silent] and got["missing_partitions"] == [2, 3]
        assert "may exist" in got["error"]
        resp = await client.get("/v1/runs", headers=auth)
        got = await resp.json()
        assert resp.status == 200 and [r["run_id"] for r in got["data"]] == ["01A"]
        assert got["partial"] is True and got["missing_engines"] == [silent]
        resp = await client.get("/v1/events/E1/runs", headers=auth)
        assert (await resp.json())["missing_partitions"] == [2, 3]
        resp = await client.post("/v1/runs/01B/cancel", headers=auth)
        assert resp.status == 404 and (await resp.json())["partial"] is True
        # The peer endpoint needs the key like every /v1 path, and checks its input.
        resp = await client.post("/v1/cluster/query", data=packb({"method": "get_run",
                                                                  "args": ["01A"]}))
        assert resp.status == 401
        for bad in (b"\xc1", packb([]), packb({"method": "state_hash", "args": []}),
                    packb({"method": "list_runs", "args": [5, None, {"x": 1}]})):
            resp = await client.post("/v1/cluster/query", data=bad, headers=auth)
            assert resp.status == 400, bad
        resp = await client.get("/v1/cluster", headers=auth)
        assert (await resp.json())["data"]["partitions"] == [0, 1]
    serve(lambda url: engine(url, [silent], [state("01A")], [0, 1]), body)


def test_query_arguments_cross_the_wire_unchanged_and_nothing_else_does() -> None:
    flt = RunFilter(function="a-f", statuses=frozenset({"failed", "running"}), since=1,
                    until=None)
    assert args_from_wire("list_runs", wire_args("list_runs", [5, "01A", flt])) == \
        [5, "01A", flt]
    assert args_from_wire("list_runs", wire_args("list_runs", [5, None, None])) == \
        [5, None, None]
    assert args_from_wire("get_run", wire_args("get_run", ["01A"])) == ["01A"]
    for method, args in (("get_run", [1]), ("get_run", ["a", "b"]), ("list_runs", [5]),
                         ("list_runs", [True, None, None]), ("list_runs", [-1, None, None]),
                         ("list_runs", [5, 7, None]), ("functions", []), ("get_run", "x"),
                         ("list_runs", [5, None, {"function": None, "statuses": "x",
                                                  "since": None, "until": None}])):
        with pytest.raises(ValueError):
            args_from_wire(method, args)


def test_advertisements_decode_age_and_replace_each_other() -> None:
    ad = Advert("http://a:1", frozenset({1, 2}), 10_000, 1000)
    assert decode_advert(ad.encode()) == ad
    for junk in (b"", b"[]", b'{"url": 1}', b'{"url": "ftp://x", "partitions": [],'
                 b' "at_ms": 1, "heartbeat_ms": 1}'):
        assert decode_advert(junk) is None
    assert ad.live(10_000 + 4000) and not ad.live(10_000 + 4001)

    peers = Peers(Settings(brokers="unused"), lambda: [], threading.Event())
    peers.url = "http://me:1"
    newer = Advert("http://a:1", frozenset({3}), 20_000, 1000)
    peers.apply(b"http://a:1", newer.encode())
    peers.apply(b"http://a:1", ad.encode())  # older: read late, ignored
    peers.apply(b"http://me:1", Advert("http://me:1", frozenset(), 20_000, 1000).encode())
    peers.apply(b"x", b"not json")
    assert peers.table()[0] == newer and len(peers.table()) == 2
    assert [a.url for a in peers.live()] == []  # 20 s ago: stale, and me is never a peer
    peers.apply(b"http://a:1", None)  # a clean stop withdraws it
    assert [a.url for a in peers.table()] == ["http://me:1"]


def test_the_advertised_url_is_configured_or_the_bound_one_reachable() -> None:
    assert advertised_url("http://engine-0.engines:8288/", ["http://127.0.0.1:1"]) == \
        "http://engine-0.engines:8288"
    assert advertised_url(None, ["http://127.0.0.1:8288"]) == "http://127.0.0.1:8288"
    assert advertised_url(None, ["http://0.0.0.0:8288"]) == \
        f"http://{socket.getfqdn()}:8288"
    with pytest.raises(ValueError):
        advertised_url(None, [])
