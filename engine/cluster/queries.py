"""The HTTP API's queries over every engine process: this one's partitions and its peers'.

:class:`ClusterQueries` implements :class:`engine.api.http.RunQueries`. A run query
(``get_run``, ``runs_for_event``, ``list_runs``, ``function_detail``) is asked of this
engine's own partitions and, at the same time, of every live peer over HTTP
(``POST /v1/cluster/query``, which answers from the peer's own partitions only, so a
query never travels further than one hop); the answers are merged
(:mod:`engine.cluster.merge`). A peer that does not answer within
``STEPSTREAM_PEER_TIMEOUT_MS`` is left out and the answer says it is partial. Anything
else (the registry, the state hash, lag, and any method added to ``RunQueries`` later)
answers from this engine, as :class:`engine.api.queries.Queries` does.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, Protocol

import msgpack
from aiohttp import web

from engine.api.http import error
from engine.api.views import RunFilter
from engine.cluster.merge import (
    Answer,
    Gathered,
    Partial,
    coverage,
    first_run,
    merged_flow_state,
    newest_first,
    union_by_run_id,
)
from engine.cluster.peers import Advert
from engine.runstate import RunState
from topics.codec import packb

log = logging.getLogger("stepstream.cluster")

PEER_PATH = "/v1/cluster/query"
MSGPACK = "application/msgpack"
# Peer calls in flight at once, over all requests: a slow peer ties up at most these.
PEER_THREADS = 8
# A peer that fails is logged at most this often.
LOG_EVERY_S = 30.0


class PeerSource(Protocol):
    """The peer table (:class:`engine.cluster.peers.Peers`)."""

    url: str | None

    def live(self) -> list[Advert]: ...


def filter_to_wire(flt: RunFilter | None) -> dict[str, Any] | None:
    """A listing filter as plain data for a peer."""
    if flt is None:
        return None
    return {"function": flt.function,
            "statuses": None if flt.statuses is None else sorted(flt.statuses),
            "since": flt.since, "until": flt.until}


def filter_from_wire(raw: Any) -> RunFilter | None:
    """The filter of :func:`filter_to_wire`; raises ValueError on anything else."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"function", "statuses", "since", "until"}:
        raise ValueError("filter must be {function, statuses, since, until}")
    statuses = raw["statuses"]
    if statuses is not None and not (isinstance(statuses, list)
                                     and all(isinstance(s, str) for s in statuses)):
        raise ValueError("statuses must be a list of strings or null")
    for name in ("since", "until"):
        if raw[name] is not None and not isinstance(raw[name], int):
            raise ValueError(f"{name} must be an integer or null")
    if raw["function"] is not None and not isinstance(raw["function"], str):
        raise ValueError("function must be a string or null")
    return RunFilter(function=raw["function"],
                     statuses=None if statuses is None else frozenset(statuses),
                     since=raw["since"], until=raw["until"])


def wire_args(method: str, args: Sequence[Any]) -> list[Any]:
    """A peer query's arguments as plain data."""
    if method == "list_runs":
        limit, cursor, flt = args
        return [limit, cursor, filter_to_wire(flt)]
    return list(args)


def args_from_wire(method: str, raw: Any) -> list[Any]:
    """The arguments of a peer query; raises ValueError on a method or arguments that
    are not one of the four run queries."""
    if not isinstance(raw, list):
        raise ValueError("args must be a list")
    if method in ("get_run", "runs_for_event", "function_detail"):
        if len(raw) != 1 or not isinstance(raw[0], str):
            raise ValueError(f"{method} takes one string")
        return raw
    if method == "list_runs":
        if len(raw) != 3:
            raise ValueError("list_runs takes limit, cursor, filter")
        limit, cursor, flt = raw
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= 10_001:
            raise ValueError("limit must be an integer from 0 to 10001")
        if cursor is not None and not isinstance(cursor, str):
            raise ValueError("cursor must be a string or null")
        return [limit, cursor, filter_from_wire(flt)]
    raise ValueError(f"unknown query {method!r} (known: get_run, runs_for_event, "
                     f"list_runs, function_detail)")


class ClusterQueries:
    """Run queries answered for every partition, by this engine and its live peers.

    ``local`` answers from this engine's partitions (:class:`engine.api.queries.Queries`);
    ``owned`` says which ``runs`` partitions those are; ``peers`` is the peer table.
    ``api_key`` is sent to peers (the engines of one cluster share their API keys).
    """

    def __init__(self, local: Any, owned: Callable[[], list[int]], peers: PeerSource, *,
                 partitions: int, timeout_s: float, api_key: str | None) -> None:
        self.local = local
        self.owned = owned
        self.peers = peers
        self.partitions = partitions
        self.timeout_s = timeout_s
        self.api_key = api_key
        self._pool = ThreadPoolExecutor(PEER_THREADS, thread_name_prefix="stepstream-peer")
        # No proxy from the environment: peers are asked directly.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._logged: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this class does not define: the registry, state hash,
        # lag and anything added to RunQueries later answer from this engine.
        if name == "local":
            raise AttributeError(name)
        return getattr(self.local, name)

    @property
    def engine(self) -> str:
        """This engine's id in answers: its advertised URL once the API is bound."""
        return self.peers.url or "local"

    # --- the run queries -------------------------------------------------------------

    def find_run(self, run_id: str) -> tuple[RunState | None, Partial | None]:
        """The run, and (when it was not found) what was not read: a run missing from
        a partial answer may exist on an engine that did not answer. A run in this
        engine's partitions is answered without asking the peers; else the first peer
        that has it answers, without waiting for the others."""
        mine = self.local_answer("get_run", [run_id])
        if mine.result is not None:
            return mine.result, None
        answers, partial = self._gather("get_run", [run_id], mine=mine, until_found=True)
        state = first_run(answers)
        return state, (None if state is not None else partial)

    def get_run(self, run_id: str) -> RunState | None:
        return self.find_run(run_id)[0]

    def runs_for_event(self, event_id: str) -> Gathered:
        answers, partial = self._gather("runs_for_event", [event_id])
        return Gathered(union_by_run_id(answers), partial)

    def list_runs(self, limit: int, cursor: str | None = None,
                  flt: RunFilter | None = None) -> Gathered:
        """Newest first below ``cursor``, exactly ``limit`` unless fewer match in every
        partition read (see :func:`engine.cluster.merge.newest_first`)."""
        answers, partial = self._gather("list_runs", [limit, cursor, flt])
        return Gathered(newest_first(answers, limit), partial)

    def function_detail(self, fn_id: str) -> dict[str, Any] | None:
        """The function's view with ``flow_state`` over every engine's partitions."""
        answers, partial = self._gather("function_detail", [fn_id])
        mine = next((a.result for a in answers if a.engine == self.engine), None)
        if mine is None:
            return None
        view = dict(mine)
        view["flow_state"] = merged_flow_state([a.result for a in answers
                                                if isinstance(a.result, dict)])
        if partial is not None:
            view["flow_state"].update(partial.fields())
        return view

    # --- per engine: the registry is the same on every engine, the hash is its own ---

    def state_hash(self) -> str:
        return str(self.local.state_hash())

    def functions(self) -> list[dict[str, Any]]:
        return list(self.local.functions())

    def function(self, fn_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.local.function(fn_id)
        return found

    # --- asking ---------------------------------------------------------------------

    def local_answer(self, method: str, args: Sequence[Any]) -> Answer:
        """This engine's own answer, with the partitions it owned throughout."""
        before = set(self.owned())
        result = getattr(self.local, method)(*args)
        return Answer(self.engine, frozenset(before.intersection(self.owned())), result)

    def _gather(self, method: str, args: list[Any], *, mine: Answer | None = None,
                until_found: bool = False) -> tuple[list[Answer], Partial | None]:
        """This engine's answer (``mine``, or asked now) and every live peer's, asked at
        once and awaited until the peer timeout; with ``until_found``, only until one
        answer holds a result."""
        peers = [p.url for p in self.peers.live()]
        asked: dict[Future[Answer], str] = {}
        if peers:
            body = packb({"method": method, "args": wire_args(method, args)})
            asked = {self._pool.submit(self._ask, url, body): url for url in peers}
        deadline = time.monotonic() + self.timeout_s
        answers = [mine if mine is not None else self.local_answer(method, args)]
        silent: list[str] = []
        pending = set(asked)
        found = False
        try:
            for fut in as_completed(asked, timeout=max(0.0, deadline - time.monotonic())):
                pending.discard(fut)
                try:
                    answers.append(fut.result())
                except Exception as exc:
                    silent.append(asked[fut])
                    self._log(asked[fut], exc)
                    continue
                if until_found and answers[-1].result is not None:
                    found = True
                    break
        except TimeoutError:
            pass
        for fut in pending:  # past the deadline (or not needed: found elsewhere)
            fut.cancel()  # still queued behind slow peers: not asked at all
            silent.append(asked[fut])
            if not found:
                self._log(asked[fut], TimeoutError())
        return answers, coverage(answers, self.partitions, silent)

    def _ask(self, url: str, body: bytes) -> Answer:
        headers = {"Content-Type": MSGPACK, "Accept": MSGPACK}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url + PEER_PATH, data=body, headers=headers,
                                     method="POST")
        with self._opener.open(req, timeout=self.timeout_s) as resp:
            payload = msgpack.unpackb(resp.read(), raw=False, strict_map_key=False)
        return Answer(url, frozenset(int(p) for p in payload["partitions"]),
                      payload["result"])

    def _log(self, url: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged.get(url, -LOG_EVERY_S) < LOG_EVERY_S:
            return
        self._logged[url] = now
        if isinstance(exc, urllib.error.HTTPError):
            detail = f"HTTP {exc.code} (a different API key? STEPSTREAM_API_KEYS)"
        else:
            detail = repr(exc) if str(exc) else type(exc).__name__ + " (timed out)"
        log.warning("peer engine %s did not answer: %s; answers are partial until it "
                    "does or its partitions move", url, detail)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- the peer endpoint and the peer table, on the API ---------------------------------

CLUSTER: web.AppKey[ClusterQueries] = web.AppKey("cluster")


async def peer_query(request: web.Request) -> web.Response:
    """``POST /v1/cluster/query``: a run query answered from this engine's partitions
    only (msgpack ``{"method", "args"}`` -> ``{"engine", "partitions", "result"}``)."""
    cluster = request.app[CLUSTER]
    try:
        payload = msgpack.unpackb(await request.read(), raw=False, strict_map_key=False)
        if not isinstance(payload, dict) or not isinstance(payload.get("method"), str):
            raise ValueError('body must be msgpack {"method": ..., "args": [...]}')
        method = payload["method"]
        args = args_from_wire(method, payload.get("args"))
    except (ValueError, msgpack.UnpackException) as exc:
        return error(400, f"peer query: {exc}")
    answer = await asyncio.to_thread(cluster.local_answer, method, args)
    body = packb({"engine": answer.engine, "partitions": sorted(answer.partitions),
                  "result": answer.result})
    return web.Response(body=body, content_type=MSGPACK)


async def cluster_view(request: web.Request) -> web.Response:
    """``GET /v1/cluster``: this engine, and the peer table as it holds it."""
    cluster = request.app[CLUSTER]
    table: list[Advert] = getattr(cluster.peers, "table", lambda: [])()
    live = {a.url for a in cluster.peers.live()}
    now = int(time.time() * 1000)
    engines = [{"url": a.url, "partitions": sorted(a.partitions),
                "heartbeat_ms_ago": now - a.at_ms, "self": a.url == cluster.engine,
                "live": a.url in live or a.url == cluster.engine} for a in table]
    return web.json_response({"data": {"engine": cluster.engine,
                                       "partitions": cluster.owned(),
                                       "engines": engines}})


def add_routes(app: web.Application, cluster: ClusterQueries) -> None:
    """Serve the peer endpoint and ``GET /v1/cluster`` on ``app`` (behind its keys)."""
    app[CLUSTER] = cluster
    app.router.add_post(PEER_PATH, peer_query)
    app.router.add_get("/v1/cluster", cluster_view)
