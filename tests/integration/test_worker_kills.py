"""Workers killed with SIGKILL under load: a step whose outcome was recorded before a
kill never runs again after it, counted from a ledger every step execution writes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sdk
from tests.checkers.ledger import read_ledger, recorded_steps, repeats_after_faults
from tests.checkers.takeovers import in_takeover, takeovers
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
    return sum(1 for e in read_ledger(ledger) if e.pid == pid and e.start_ms > since_ms)


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
    for run in runs:
        assert run["status"] == "completed", run
        assert sorted(recorded_steps(run)) == ["a", "b", "c"], run["timeline"]
    ran = {(e.run_id, e.step) for e in executions}
    missing = [(r["run_id"], s) for r in runs for s in "abc" if (r["run_id"], s) not in ran]
    assert not missing, f"no ledger line for these steps: {missing[:5]}"
    # A step still executing on a worker that lost its partition may run again on the
    # new owner, even after the old one recorded it (the documented takeover window).
    taken = takeovers(tmp_path.glob("w*.log"))
    repeats = repeats_after_faults(runs, executions, kills_ms,
                                   lambda pid, start, recorded: in_takeover(
                                       taken, pid, start, recorded))
    print(f"\n{len(runs)} runs, {len(executions)} step executions, {len(runs) * 3} steps; "
          f"repeats of recorded steps after a kill: {repeats.violations}; "
          f"all repeats: {len(executions) - len(ran)}")
    assert repeats.violations == 0, (
        f"steps recorded before a kill ran again after it: {repeats.violations}; "
        f"e.g. {repeats.examples}")
