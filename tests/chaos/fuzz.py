"""HTTP fuzzing of every endpoint with hypothesis strategies (structure-aware JSON, random
bytes, deep nesting, huge numbers, bad unicode, bad headers), then a burst of concurrent
clients, all under load. No answer may be a 5xx; /health stays fast throughout."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.chaos.scenarios import Options, Result, finish, start
from tests.chaos.stack import EVENT_KEY, ChaosStack, Load
from tests.checkers.verdict import Check
from tests.integration.harness import API_KEY, wait_for

# (method, path template); {id} is filled with fuzz or, for reads, a real id.
ENDPOINTS: list[tuple[str, str]] = [
    ("POST", "/e/{key}"), ("GET", "/v1/events/{id}/runs"), ("GET", "/v1/runs/{id}"),
    ("GET", "/v1/runs"), ("POST", "/v1/runs/{fake}/cancel"), ("DELETE", "/v1/runs/{fake}"),
    ("GET", "/v1/runs/{id}/trigger"), ("POST", "/v1/cancellations"),
    ("GET", "/v1/cancellations"), ("GET", "/v1/state/hash"), ("GET", "/v1/functions"),
    ("GET", "/v1/functions/{id}"), ("DELETE", "/v1/functions/{fake}"), ("GET", "/health"),
    ("GET", "/v1/events"), ("GET", "/v1/events/{id}"), ("GET", "/v1/dead-letters"),
    ("POST", "/v1/functions/{fake}/invoke"), ("GET", "/login"), ("POST", "/login"),
    ("POST", "/logout"), ("POST", "/v1/runs/{fake}/rerun"), ("POST", "/v1/reruns"),
    ("GET", "/metrics"), ("GET", "/"), ("GET", "/runs/{id}"), ("GET", "/events"),
    ("GET", "/functions"), ("GET", "/dead-letters"), ("GET", "/ui/runs.json"),
    ("POST", "/ui/send-event"), ("GET", "/static/{fake}"),
]
QUERY_NAMES = ["limit", "cursor", "before", "function", "status", "since", "until", "name",
               "event", "q"]


@dataclass
class Request:
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**40),
                                                              max_value=10**40),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
        max_leaves=30)


def _events() -> st.SearchStrategy[Any]:
    """Event-shaped JSON: the fields the API knows, with values of any type."""
    field_values = _json_values()
    event = st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.sampled_from(["chaos/go", "chaos/nothing", "", "inngest/x"]),
                          field_values),
        "data": field_values, "id": field_values, "ts": field_values, "v": field_values,
        "user": field_values})
    return st.one_of(event, st.lists(event, max_size=4))


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "json", "event", "bytes", "deep", "huge-number",
                                 "bad-unicode", "nan"]))
    if kind == "none":
        return None
    if kind == "json":
        return json.dumps(draw(_json_values())).encode()
    if kind == "event":
        return json.dumps(draw(_events())).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "deep":
        depth = draw(st.integers(min_value=100, max_value=200_000))
        open_, close = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (open_ * depth + "1" + close * depth).encode()
    if kind == "huge-number":
        digits = draw(st.integers(min_value=20, max_value=50_000))
        return draw(st.sampled_from([
            b'{"name": "chaos/go", "data": {"n": ' + b"9" * digits + b"}}",
            b'{"limit": 1e' + str(digits).encode() + b"}", b"-" + b"1" * digits]))
    if kind == "bad-unicode":
        return draw(st.sampled_from([b'{"name": "\xff\xfe"}', b'{"name": "\\ud800"}',
                                     b'["\xed\xa0\x80"]', b"\xc0\xaf", '{"n":"\u202e"}'.encode()]))
    return b'{"name": "chaos/go", "data": {"n": NaN, "m": Infinity}}'


@st.composite
def headers(draw: st.DrawFn) -> dict[str, str]:
    out: dict[str, str] = {}
    auth = draw(st.sampled_from(["good", "none", "bad", "weird"]))
    if auth == "good":
        out["Authorization"] = f"Bearer {API_KEY}"
    elif auth == "bad":
        out["Authorization"] = draw(st.sampled_from(["Bearer", "Basic Zm9v", "Bearer x y",
                                                     "bearer " + API_KEY]))
    elif auth == "weird":
        out["Authorization"] = "Bearer " + draw(st.text(
            alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xff), max_size=50))
    if draw(st.booleans()):
        out["Content-Type"] = draw(st.sampled_from([
            "application/json", "text/plain", "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x", "application/json; charset=latin-1", "\x7f"]))
    if draw(st.integers(0, 4)) == 0:
        out["Content-Encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "zstd",
                                                        "x-nonsense"]))
    if draw(st.integers(0, 6)) == 0:
        out["x-inngest-event-id-seed"] = draw(st.text(
            alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xff), max_size=30))
    return out


def _segment() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=60), st.sampled_from([
        "..", "%2e%2e", "a" * 5000, "\x00", "🙂", "-1", "0", "null"]))


@st.composite
def requests(draw: st.DrawFn, real: dict[str, list[str]]) -> Request:
    method, template = draw(st.sampled_from(ENDPOINTS))
    own = method
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = template
    for slot in ("{id}", "{fake}", "{key}"):
        if slot in path:
            choices: list[str] = {"{id}": real.get("id", []), "{key}": [EVENT_KEY]}.get(
                slot, [])
            # Real ids only with the path's own method (the event key with any): a read
            # turned into a DELETE with a real id is a valid request that removes the
            # load's own function (it did, once: 1,484 events then had no run, rightly),
            # not a bad input.
            use_real = (bool(choices) and (slot == "{key}" or method == own)
                        and draw(st.booleans()))
            value = draw(st.sampled_from(choices)) if use_real else draw(_segment())
            path = path.replace(slot, urllib.parse.quote(value, safe=""))
    if draw(st.booleans()):
        query = draw(st.lists(st.tuples(st.sampled_from(QUERY_NAMES), _segment()), max_size=4))
        path += "?" + urllib.parse.urlencode(query)
    body = draw(bodies()) if method != "GET" or draw(st.integers(0, 9)) == 0 else None
    return Request(method, path, body, draw(headers()))


def send(port: int, req: Request, timeout: float = 30) -> int:
    """The answer's status; 0 when there was none (refused, reset, timed out)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(req.method, req.path, skip_accept_encoding=True)
        for k, v in req.headers.items():
            conn.putheader(k, v.encode("latin-1", "replace"))
        body = req.body or b""
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def fuzz_for(stack: ChaosStack, seconds: float, real: dict[str, list[str]]
             ) -> tuple[int, int, list[tuple[float, str]]]:
    """Hypothesis-generated requests for ``seconds``: how many were sent, how many got no
    answer at all, and the slowest few (ms, what) — the ones that may hold up /health."""
    sent = unanswered = 0
    slowest: list[tuple[float, str]] = []
    deadline = time.monotonic() + seconds

    @settings(max_examples=50, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(requests(real))
    def one(req: Request) -> None:
        nonlocal sent, unanswered
        if time.monotonic() > deadline:
            return
        began = time.perf_counter()
        code = send(stack.port, req)
        took = (time.perf_counter() - began) * 1000
        body = req.body or b""
        slowest.append((took, f"{req.method} {req.path[:60]} ({code}) body {len(body)} B "
                              f"{body[:24]!r}"))
        slowest.sort(reverse=True)
        del slowest[5:]
        sent += 1
        stack.no_5xx.case(code == 0 or code < 500,
                          {"method": req.method, "path": req.path[:200], "status": code,
                           "headers": req.headers,
                           "body": (req.body or b"")[:200].decode("latin-1")})
        unanswered += code == 0

    while time.monotonic() < deadline:
        one()
    return sent, unanswered, slowest


def burst(stack: ChaosStack, clients: int = 32, each: int = 20) -> tuple[int, list[str]]:
    """``clients`` threads at once, each ``each`` mixed requests (reads, and events sent
    over POST /e/); the number sent and the ids of the events the API acknowledged."""
    ids: list[str] = []
    lock = threading.Lock()
    paths = ["/v1/runs?limit=200", "/v1/functions", "/v1/events?limit=50", "/health",
             "/v1/dead-letters?limit=20", "/ui/runs.json", "/metrics"]
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    def client(c: int) -> None:
        for i in range(each):
            if i % 3 == 0:
                body = json.dumps([{"name": "chaos/go", "data": {"n": c * 1000 + i}}]).encode()
                conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
                try:
                    conn.request("POST", f"/e/{EVENT_KEY}", body, auth)
                    resp = conn.getresponse()
                    answer = resp.read()
                    stack.no_5xx.case(resp.status < 500, {"burst": "POST /e", "status":
                                                          resp.status})
                    if resp.status == 200:
                        with lock:
                            ids.extend(json.loads(answer)["ids"])
                except (OSError, http.client.HTTPException):
                    pass
                finally:
                    conn.close()
            else:
                code = send(stack.port, Request("GET", paths[(c + i) % len(paths)], None,
                                                auth))
                stack.no_5xx.case(code < 500, {"burst": paths[(c + i) % len(paths)],
                                               "status": code})

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return clients * each, ids


def http_fuzz(stack: ChaosStack, opts: Options) -> Result:
    """Every endpoint fuzzed with hypothesis (JSON by structure, random bytes, deep
    nesting, huge numbers, bad unicode, bad headers), then 32 concurrent clients."""
    result = Result("http-fuzz")
    start(stack)
    load = Load(stack, "chaos/go", opts.rate)
    # Real ids, so that reads reach past "not found" too.
    first = stack.send("chaos/go", {"n": -1})
    runs = wait_for(lambda: stack.runs_of(first), 60, "the first run")
    real = {"id": [first, *[str(r["run_id"]) for r in runs], "chaos-three", "chaos-limited"]}
    result.bad_inputs, unanswered, slowest = fuzz_for(stack, max(opts.seconds - 10, 5), real)
    result.notes.append("slowest fuzz requests: " + "; ".join(
        f"{ms:.0f} ms {what}" for ms, what in slowest))
    sent, ids = burst(stack)
    result.bad_inputs += sent
    load.event_ids.extend(ids)
    result.faults["concurrent clients"] = 32
    answered = Check("every request answered")
    answered.checked = result.bad_inputs
    for _ in range(unanswered):
        answered.violation()
    if unanswered:
        answered.examples = [w for ms, w in slowest if "(0)" in w][:3]
        result.notes.append(f"{unanswered} fuzz requests got no answer within 30 s "
                            f"(connection closed or timed out)")
    return finish(stack, result, [load], opts, lambda: [answered])
