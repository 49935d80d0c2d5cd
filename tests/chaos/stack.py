"""One scenario's stack as real processes on the campaign's broker: engines (`stepstream
engine`) killed and restarted, workers (`stepstream worker tests.chaos.app:client`)
killed, started and stopped, a load of events, a /health probe, and an API client that
counts every 5xx. Everything the checkers get comes through the HTTP API, the topics or
the app's ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sdk
from engine.cli.devbroker import free_port
from engine.runtime.replay import replay
from tests.checkers.health import health_within, read_samples
from tests.checkers.ledger import TERMINAL, Execution, read_ledger, status
from tests.checkers.verdict import Check
from tests.integration.harness import ROOT, Stack, api_request, terminate, wait_for

APP = "tests.chaos.app:client"
EVENT_KEY = "chaos-event-key"
HEALTH_BUDGET_MS = 100


def _tail(path: Path, lines: int = 15) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


class ChaosStack(Stack):
    """A :class:`Stack` whose engine and workers are child processes the scenario may
    kill, plus the checks that watch them while it runs."""

    def __init__(self, broker: str, tmp: Path, *, partitions: int = 4) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(broker, tmp, partitions=partitions)
        self.ledger = tmp / "ledger"
        self.state = tmp / "engine-state"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.engine_proc: subprocess.Popen[bytes] | None = None
        self.workers_procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()  # pids we ended on purpose
        self.faults: Counter[str] = Counter()
        self.fault_ms: list[int] = []       # kills: nothing recorded before may re-run
        self.rebalance_ms: list[int] = []   # joins and graceful leaves
        self.no_5xx = Check("no 5xx from the API")
        self.health = Check(f"/health within {HEALTH_BUDGET_MS} ms")
        self.exits = Check("engine and workers never exit unless killed")
        self.up: list[tuple[int, int | None]] = []  # when the engine was meant to answer
        self.probe: subprocess.Popen[bytes] | None = None
        self._up = threading.Event()
        self._stop = threading.Event()
        self._log_n = 0
        self.logs: dict[int, Path] = {}
        self._watch = threading.Thread(target=self._watch_loop, daemon=True)
        self._watch.start()
        self.sender = sdk.Client(app_id="chaos-load", settings=self.settings)

    def env(self) -> dict[str, str]:
        return {**super().env(), "STEPSTREAM_TEST_LEDGER": str(self.ledger),
                "STEPSTREAM_EVENT_KEYS": EVENT_KEY,
                # A killed worker's partitions wait out its session: keep it short.
                "STEPSTREAM_SESSION_TIMEOUT_MS": "4000",
                "STEPSTREAM_HEARTBEAT_INTERVAL_MS": "500"}

    def spawn(self, *args: str, log: str = "child") -> subprocess.Popen[bytes]:
        proc = super().spawn(*args, log=log)
        self.logs[proc.pid] = self.tmp / f"{log}.log"
        return proc

    def _log(self, name: str) -> str:
        self._log_n += 1
        return f"{name}-{self._log_n}"

    # --- engine -----------------------------------------------------------------------

    def start_engine_proc(self, timeout: float = 90) -> None:
        self.engine_proc = self.spawn("engine", "--port", str(self.port), "--state-dir",
                                      str(self.state), "--no-create-topics",
                                      log=self._log("engine"))
        self.exits.checked += 1
        wait_for(self._answers, timeout, "the engine's API", every=0.05)
        self._up.set()
        self.up.append((time.time_ns() // 1_000_000, None))
        if self.probe is None:
            self.probe = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.probe", self.base + "/health",
                 str(self.tmp / "health.samples")], cwd=ROOT, env=self.env())

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, ValueError):
            return False

    def kill_engine(self) -> None:
        assert self.engine_proc is not None
        self._up.clear()
        self.up[-1] = (self.up[-1][0], time.time_ns() // 1_000_000)
        self._kill(self.engine_proc, "engine kill -9")

    def _kill(self, proc: subprocess.Popen[bytes], fault: str) -> None:
        self.killed.add(proc.pid)
        self.fault_ms.append(time.time_ns() // 1_000_000)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.faults[fault] += 1

    # --- workers ----------------------------------------------------------------------

    def start_worker_proc(self) -> subprocess.Popen[bytes]:
        proc = self.spawn("-v", "worker", APP, "--quiet", "--concurrency", "100",
                          log=self._log("worker"))
        self.exits.checked += 1
        self.workers_procs.append(proc)
        return proc

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` and start its successor in its place."""
        self._kill(self.workers_procs[i], "worker kill -9")
        self.start_worker_proc()
        self.workers_procs[i] = self.workers_procs.pop()

    def join_worker(self) -> None:
        self.rebalance_ms.append(time.time_ns() // 1_000_000)
        self.start_worker_proc()
        self.faults["worker join"] += 1

    def leave_worker(self) -> None:
        """SIGTERM the newest worker: a graceful leave, its partitions move at once."""
        proc = self.workers_procs.pop()
        self.killed.add(proc.pid)
        self.rebalance_ms.append(time.time_ns() // 1_000_000)
        if not terminate(proc, 30):
            self.exits.violation({"worker": proc.pid, "what": "no exit 30 s after SIGTERM"})
        self.faults["worker leave"] += 1

    # --- watching ---------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self._stop.wait(0.25):
            for proc in [self.engine_proc, *self.workers_procs]:
                if proc is not None and proc.pid not in self.killed and proc.poll() is not None:
                    self.killed.add(proc.pid)  # count it once
                    self.exits.violation({"pid": proc.pid, "args": str(proc.args)[-80:],
                                          "code": proc.returncode,
                                          "log": _tail(self.logs[proc.pid])})

    # --- the API ----------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One keyed request; a 5xx answer is counted against the API."""
        try:
            code, answer = api_request(self.base, method, path, body)
        except (OSError, ValueError) as exc:
            return 0, str(exc)
        self.no_5xx.case(code < 500, {"method": method, "path": path, "status": code,
                                      "answer": str(answer)[:300]})
        return code, answer

    def runs_of(self, event_id: str) -> list[dict[str, Any]] | None:
        code, body = self.call("GET", f"/v1/events/{event_id}/runs")
        return list(body["data"]) if code == 200 else None

    def runs_of_function(self, fn_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            q = {"function": fn_id, "limit": "500", **({"cursor": cursor} if cursor else {})}
            code, body = self.call("GET", "/v1/runs?" + urllib.parse.urlencode(q))
            if code != 200:
                raise AssertionError(f"GET /v1/runs answered {code}: {body}")
            out.extend(body["data"])
            cursor = body.get("next_cursor")
            if not cursor:
                return out

    def send(self, name: str, data: dict[str, Any], event_id: str | None = None) -> str:
        [sent] = self.sender.send_sync(sdk.Event(name=name, data=data, id=event_id))
        return str(sent)

    def send_many(self, name: str, datas: list[dict[str, Any]]) -> list[str]:
        return [str(i) for i in self.sender.send_sync([sdk.Event(name=name, data=d) for d in datas])]

    def executions(self) -> list[Execution]:
        return read_ledger(self.ledger)

    # --- the end of a scenario ----------------------------------------------------------

    def settle(self, event_ids: list[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
        """Each event's runs once every one has ended, or as they are at ``timeout``."""
        found: dict[str, list[dict[str, Any]]] = {}
        pending = list(event_ids)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            still = []
            for e in pending:
                runs = self.runs_of(e)
                if runs is not None:
                    found[e] = runs
                if not runs or any(status(r) not in TERMINAL for r in runs):
                    still.append(e)
            pending = still
            if pending:
                time.sleep(0.5)
        return found

    def lag_zero(self, timeout: float) -> bool:
        def zero() -> bool:
            code, body = self.call("GET", "/health")
            lag = body.get("consumer_lag") if code == 200 and isinstance(body, dict) else None
            return isinstance(lag, dict) and lag.get("total") == 0
        try:
            wait_for(zero, timeout, "consumer lag zero", every=0.5)
            return True
        except AssertionError:
            return False

    def replay_hash(self, tries: int = 3) -> Check:
        """The live engine's state hash equals a replay of the topics (asked before and
        after the replay, so a state still moving is told from a replay that differs)."""
        check = Check("replay hash equals live hash")
        seen = []
        for n in range(tries):
            self.lag_zero(30)
            before = self.call("GET", "/v1/state/hash")[1]
            replayed = replay(self.settings, self.tmp / f"replayed-{n}", timeout_s=120)
            after = self.call("GET", "/v1/state/hash")[1]
            live = (before or {}).get("hash"), (after or {}).get("hash")
            seen.append({"live_before": live[0], "replayed": replayed, "live_after": live[1]})
            if replayed in live:
                check.case(True)
                return check
            if live[0] == live[1]:
                break  # the state stood still and the replay differs
        check.case(False, seen[-3:])
        return check

    def health_checks(self) -> list[Check]:
        """/health answered within budget whenever the engine was up; its 5xx counted
        with the API's. The samples come from the probe process."""
        fast, no_5xx = health_within(read_samples(self.tmp / "health.samples"), self.up,
                                     HEALTH_BUDGET_MS)
        self.no_5xx.merge(no_5xx)
        self.health = fast
        return [fast]

    def close(self) -> None:
        if self.probe is not None:
            self.probe.kill()
            self.probe.wait()
        self._stop.set()
        self._watch.join(5)
        self._up.clear()
        for proc in [self.engine_proc, *self.workers_procs]:
            if proc is not None:
                self.killed.add(proc.pid)
        self.sender.close()
        super().close()


class Load:
    """Sends ``make(n)`` events of ``name`` at ``rate`` per second from a thread until
    stopped; keeps the ids the broker acknowledged."""

    def __init__(self, stack: ChaosStack, name: str, rate: float,
                 make: Callable[[int], dict[str, Any]] = lambda n: {"n": n}) -> None:
        self.stack, self.name, self.rate, self.make = stack, name, rate, make
        self.event_ids: list[str] = []
        self.send_errors = 0
        self.started = time.monotonic()
        self.stopped: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()

    def _send(self) -> None:
        n = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - self.started) * self.rate)
            if due > n:
                try:
                    self.event_ids.extend(self.stack.send_many(
                        self.name, [self.make(n + i) for i in range(due - n)]))
                except Exception:
                    self.send_errors += 1
                n = due
            self._stop.wait(0.05)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(30)
        self.stopped = time.monotonic()
        return self.event_ids

    @property
    def seconds(self) -> float:
        return (self.stopped or time.monotonic()) - self.started
