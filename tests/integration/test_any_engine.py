"""Any engine answers for any run: two `stepstream engine` processes on the same topics,
each owning half the partitions, give the same answers on every HTTP path; with one of
them hung or killed, the other answers what it can, says the answer is partial, and
never errs or waits past the peer timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine.cli.devbroker import free_port
from tests.integration.harness import ROOT, Stack, api_request, wait_for
from topics.catalog import partition_for
from topics.ids import dedupe_key_for

pytestmark = pytest.mark.kafka

PEER_TIMEOUT_MS = 1500
RUNS = 12


def make_client(settings: Any) -> sdk.Client:
    client = sdk.Client(app_id="ae", settings=settings)

    @client.create_function(fn_id="waiter", trigger=sdk.TriggerEvent(event="ae/wait"))
    async def waiter(ctx: sdk.Context) -> object:
        go = await ctx.step.wait_for_event("go", event="ae/go", match="data.k",
                                           timeout="10m")
        return None if go is None else go.data

    return client


def partition_of(event_id: str, partitions: int) -> int:
    """The runs partition of the run an ae/wait event starts (its dedupe key's)."""
    return partition_for(dedupe_key_for("ae-waiter", "event", event_id), partitions)


def call(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    """Status and JSON body of one API call (an error status is an answer too)."""
    return api_request(f"http://127.0.0.1:{port}", method, path)


def ok(port: int, path: str) -> Any:
    status, body = call(port, path)
    assert status == 200, (port, path, status, body)
    return body


class Cluster:
    def __init__(self, stack: Stack, tmp: Path) -> None:
        self.stack = stack
        self.ports = [free_port(), free_port()]
        # A longer session than the default 6 s: the hung engine keeps its partitions
        # (and the answers stay partial) while the test asks about them; a heartbeat
        # that keeps the hung one's advertisement live as long.
        env = {**stack.env(), "STEPSTREAM_PEER_TIMEOUT_MS": str(PEER_TIMEOUT_MS),
               "STEPSTREAM_SESSION_TIMEOUT_MS": "10000",
               "STEPSTREAM_PEER_HEARTBEAT_MS": "3000"}
        self.procs = []
        for i, port in enumerate(self.ports):
            out = open(tmp / f"engine-{i}.log", "ab")  # noqa: SIM115 - closed with the child
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "engine", "--port", str(port),
                 "--state-dir", str(tmp / f"engine-{i}"), "--no-create-topics"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            stack.children.append(proc)
            self.procs.append(proc)
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]

    def owned(self, i: int) -> set[int]:
        return set(ok(self.ports[i], "/v1/cluster")["data"]["partitions"])

    def settled(self) -> bool:
        """Both engines own half the partitions each and know each other."""
        try:
            views = [ok(port, "/v1/cluster")["data"] for port in self.ports]
        except (OSError, AssertionError):
            return False
        parts = [set(v["partitions"]) for v in views]
        live = [{e["url"] for e in v["engines"] if e["live"]} for v in views]
        return (all(parts) and not parts[0] & parts[1]
                and parts[0] | parts[1] == set(range(self.stack.settings.partitions))
                and all(lv == set(self.urls) for lv in live))


@pytest.fixture(scope="module")
def cluster(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("any-engine")
    stack = Stack(broker, tmp)
    client = make_client(stack.settings)
    try:
        c = Cluster(stack, tmp)
        stack.start_worker(client)
        stack.client = client
        wait_for(c.settled, 90, "two engines sharing the partitions and advertised")
        yield c
    finally:
        for proc in stack.children:  # a hung (SIGSTOP) engine would ignore SIGTERM
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        stack.close()
        client.close()


def all_pages(port: int, query: str, limit: int) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        path = f"/v1/runs?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        body = ok(port, path)
        assert "partial" not in body, body
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_every_path_answers_the_same_from_either_engine(cluster: Cluster) -> None:
    a, b = cluster.ports
    sent = [cluster.stack.send("ae/wait", {"k": uuid.uuid4().hex}) for _ in range(RUNS)]

    def waiting() -> dict[str, dict[str, Any]] | None:
        runs = {}
        for event_id in sent:
            found = ok(a, f"/v1/events/{event_id}/runs")["data"]
            if len(found) != 1 or (found[0].get("waiting") or {}).get("kind") != "event":
                return None
            runs[event_id] = found[0]
        return runs
    by_event = wait_for(waiting, 60, "every run waiting for its event")
    run_ids = sorted((r["run_id"] for r in by_event.values()), reverse=True)
    owned = [cluster.owned(0), cluster.owned(1)]
    n = cluster.stack.settings.partitions
    home = {r["run_id"]: 0 if partition_of(e, n) in owned[0] else 1
            for e, r in by_event.items()}
    assert set(home.values()) == {0, 1}, "runs on both engines' partitions"

    for event_id in sent:  # the runs an event started, from both
        assert ok(a, f"/v1/events/{event_id}/runs") == ok(b, f"/v1/events/{event_id}/runs")
    for rid in run_ids:
        one = ok(a, f"/v1/runs/{rid}")
        assert one == ok(b, f"/v1/runs/{rid}")
        assert one["data"]["run_id"] == rid
        assert ok(a, f"/v1/runs/{rid}/trigger") == ok(b, f"/v1/runs/{rid}/trigger")

    # The listing, paged, filtered: the same pages from both, every run exactly once.
    query = "&function=ae-waiter&status=running"
    pages = all_pages(a, query, 5)
    assert pages == all_pages(b, query, 5)
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [r["run_id"] for p in pages for r in p] == run_ids

    detail = [ok(port, "/v1/functions/ae-waiter")["data"]["flow_state"] for port in (a, b)]
    assert detail[0] == detail[1]
    assert detail[0]["partitions"] == n

    # Cancel through the engine that does not own the run, once by each path.
    for rid, method, path in ((next(r for r in run_ids if home[r] == 1), "POST", "/cancel"),
                              (next(r for r in run_ids if home[r] == 0), "DELETE", "")):
        asker = a if home[rid] == 1 else b
        status, body = call(asker, f"/v1/runs/{rid}{path}", method)
        assert (status, body) == (202, {"run_id": rid, "status": "cancelling"})
        wait_for(lambda rid=rid: all(ok(port, f"/v1/runs/{rid}")["data"]["status"]
                                     == "Cancelled" for port in (a, b)),
                 30, f"run {rid} cancelled through the other engine")


def test_a_hung_then_killed_engine_gives_partial_answers_in_time(cluster: Cluster) -> None:
    a = cluster.ports[0]
    owned_a = cluster.owned(0)
    n = cluster.stack.settings.partitions
    # Events until each engine owns at least two of their runs: a fixed count can land
    # all on one side (six did, once in 32 runs, by chance).
    sent: list[str] = []
    while len(sent) < 64 and min(
            sum((partition_of(e, n) in owned_a) == side for e in sent)
            for side in (True, False)) < 2:
        sent.append(cluster.stack.send("ae/wait", {"k": uuid.uuid4().hex}))
    runs = wait_for(lambda: [r for e in sent for r in ok(a, f"/v1/events/{e}/runs")["data"]]
                    if all(ok(a, f"/v1/events/{e}/runs")["data"] for e in sent) else None,
                    60, "the runs started")
    ours = {r["run_id"] for e in sent for r in ok(a, f"/v1/events/{e}/runs")["data"]
            if partition_of(e, n) in owned_a}
    mine = [r["run_id"] for r in runs if r["run_id"] in ours]
    theirs = [r["run_id"] for r in runs if r["run_id"] not in ours]
    assert mine and theirs
    complete = ok(a, "/v1/runs?limit=1000")["data"]
    # Every run before this test's: where each lives, from its event.
    ours |= {r["run_id"] for r in complete
             if partition_of(r["event_id"], n) in owned_a}

    def partial_answers(hung: bool) -> None:
        started = time.monotonic()
        status, body = call(a, f"/v1/runs/{theirs[0]}")
        assert status == 404 and body["partial"] is True, body
        assert set(body["missing_partitions"]) == set(range(n)) - owned_a
        status, body = call(a, "/v1/runs?limit=1000")
        assert status == 200 and body["partial"] is True, body
        assert set(body["missing_partitions"]) == set(range(n)) - owned_a
        assert [r["run_id"] for r in body["data"]] == [
            r["run_id"] for r in complete if r["run_id"] in ours]
        if hung:  # asked, and waited for: never past the peer timeout
            assert body["missing_engines"] == [cluster.urls[1]]
            assert time.monotonic() - started < 2 * PEER_TIMEOUT_MS / 1000 + 1.5
            return
        assert set(body["missing_engines"]) <= {cluster.urls[1]}
        status, body = call(a, f"/v1/runs/{mine[0]}")
        assert (status, body["data"]["run_id"]) == (200, mine[0])
        status, body = call(a, f"/v1/events/{sent[0]}/runs")
        assert status == 200
        assert time.monotonic() - started < 2.0  # refused at once: no waiting

    proc = cluster.procs[1]
    os.kill(proc.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    partial_answers(hung=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial_answers(hung=False)
    # Once its partitions moved to the survivor, the survivor's answers are whole again.
    wait_for(lambda: "partial" not in ok(a, "/v1/runs?limit=1000"), 60,
             "the killed engine's partitions taken over")
    assert {r["run_id"] for r in ok(a, "/v1/runs?limit=1000")["data"]} == \
        {r["run_id"] for r in complete}
