"""Workers killed with SIGKILL under load: a step whose outcome was recorded before a
kill never runs again after it, counted from a ledger every step execution writes."""

from __future__ import annotations

import bisect
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import sdk
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.kafka
APP = "tests.integration.apps.ledgered:client"
FN = "ledgered-three"
KILLS = 5
RUNS_PER_S = 100


@pytest.fixture
def stack(broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("STEPSTREAM_TEST_LEDGER", str(tmp_path / "ledger"))
    # A killed worker's partitions wait for its session to expire: keep that short so
    # five kills fit in the test's time, and long enough for a busy 2-core machine.
    monkeypatch.setenv("STEPSTREAM_SESSION_TIMEOUT_MS", "4000")
    monkeypatch.setenv("STEPSTREAM_HEARTBEAT_INTERVAL_MS", "500")
    s = Stack(broker, tmp_path)
    yield s
    s.close()


class Load:
    """Sends ``RUNS_PER_S`` runs per second from a thread until stopped."""

    def __init__(self, client: sdk.Client) -> None:
        self.client = client
        self.event_ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()

    def _send(self) -> None:
        n, started = 0, time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * RUNS_PER_S)
            if due > n:
                batch = [sdk.Event(name="ledgered/go", data={"n": n + i}) for i in range(due - n)]
                self.event_ids.extend(str(i) for i in self.client.send_sync(batch))
                n = due
            self._stop.wait(0.05)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(30)
        return self.event_ids


def executed(ledger: Path, pid: int, since_ms: int) -> int:
    """How many step executions ``pid`` started after ``since_ms``."""
    return sum(1 for e in read_ledger(ledger) if e[2] == pid and e[3] > since_ms)


def read_ledger(path: Path) -> list[tuple[str, str, int, int]]:
    """(run_id, step, pid, start_ms) per step execution."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        run_id, step, pid, start = line.split()
        out.append((run_id, step, int(pid), int(start)))
    return out


def test_steps_recorded_before_a_worker_kill_do_not_run_again(
        stack: Stack, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    stack.start_engine()
    # -v: each worker logs what its handovers found, in w*.log under tmp_path.
    slots = [stack.spawn("-v", "worker", APP, log=f"w{i}") for i in range(2)]
    stack.wait_functions(FN)
    client = sdk.Client(app_id="ledgered", settings=stack.settings)
    load = Load(client)
    kills_ms: list[int] = []
    try:
        for k in range(KILLS):
            victim = slots[k % 2]
            since = kills_ms[-1] if kills_ms else 0
            # Kill it only once both workers have been executing since the last kill
            # (so the group settled), holding partitions with finished tasks above their
            # commit points.
            wait_for(lambda s=since: all(executed(ledger, w.pid, s) >= 200 for w in slots), 60,
                     "both workers to execute steps", every=0.1)
            kills_ms.append(time.time_ns() // 1_000_000)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            slots[k % 2] = stack.spawn("-v", "worker", APP, log=f"w{k % 2}-{k}")
        wait_for(lambda: all(executed(ledger, w.pid, kills_ms[-1]) >= 200 for w in slots), 60,
                 "both workers to execute steps after the last kill", every=0.1)
    finally:
        event_ids = load.stop()
    try:
        runs = [stack.finished_run(i, timeout=120) for i in event_ids]
    except AssertionError as exc:
        # Who held which task partition and what each handover found, for the log.
        lines = sorted(line for log in tmp_path.glob("w*.log")
                       for line in log.read_text(errors="replace").splitlines()
                       if any(w in line for w in ("assigned", "revoked", "lost", "handover")))
        raise AssertionError(f"{exc}\nworker logs:\n" + "\n".join(lines[-60:])) from None
    client.close()

    executions = read_ledger(ledger)
    by_step: dict[tuple[str, str], list[int]] = {}
    for run_id, step, _, start in executions:
        by_step.setdefault((run_id, step), []).append(start)
    repeats_after_kill: Counter[int] = Counter()
    examples = []
    for run in runs:
        assert run["status"] == "completed", run
        recorded = {e["step_id"]: e["at"] for e in run["timeline"]
                    if e["type"] == "step.completed"}
        assert sorted(recorded) == ["a", "b", "c"], run["timeline"]
        for step, recorded_at in recorded.items():
            starts = by_step.get((run["run_id"], step), [])
            assert starts, f"no ledger line for step {step} of run {run['run_id']}"
            for start in starts:
                # Charge each execution to the last kill before it started.
                k = bisect.bisect_right(kills_ms, start) - 1
                if k >= 0 and recorded_at < kills_ms[k]:
                    repeats_after_kill[k] += 1
                    if len(examples) < 5:
                        examples.append((run["run_id"], step, recorded_at, kills_ms[k], start))
    total = len(executions)
    print(f"\n{len(runs)} runs, {total} step executions, {len(runs) * 3} steps; "
          f"repeats of recorded steps per kill: {[repeats_after_kill[k] for k in range(KILLS)]}; "
          f"all repeats: {total - len(by_step)}")
    assert sum(repeats_after_kill.values()) == 0, (
        f"steps recorded before a kill ran again after it: per kill "
        f"{dict(repeats_after_kill)}; e.g. (run, step, recorded_at, kill, start) {examples}")
