"""Damaged local state: the topics are the source of truth, so an engine that finds a
partition's RocksDB corrupt moves it aside, says so, rebuilds it from the topic and goes
on; and an engine that cannot start its processor exits at once."""

from __future__ import annotations

import datetime
import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sdk
from engine.cli.devbroker import free_port
from engine.store.partition import PartitionStore
from tests.integration.harness import Stack, wait_for
from topics.catalog import partition_for

pytestmark = pytest.mark.kafka
APP = "tests.integration.apps.durable:client"


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(broker, tmp_path)
    yield s
    s.close()


def api(port: int, path: str) -> Any:
    try:
        return Stack.api_at(port, path)
    except (urllib.error.URLError, ConnectionError):
        return None


def runs_of(port: int, event_id: str) -> list[dict[str, Any]]:
    return (api(port, f"/v1/events/{event_id}/runs") or {"data": []})["data"]


def status(port: int, event_id: str) -> str | None:
    runs = runs_of(port, event_id)
    return runs[0]["status"] if runs else None


def is_waiting(port: int, event_id: str) -> bool:
    runs = runs_of(port, event_id)
    return bool(runs) and (runs[0].get("waiting") or {}).get("kind") == "event"


def engine(stack: Stack, port: int, state: Path, log: str) -> subprocess.Popen[bytes]:
    return stack.spawn("engine", "--port", str(port), "--state-dir", str(state),
                       "--no-create-topics", log=log)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def truncate_an_sst(db: Path) -> None:
    # Flushing writes the memtable to an .sst (a stopped engine leaves it in the WAL).
    store = PartitionStore(db)
    store.db.flush()
    store.close()
    sst = max(db.glob("*.sst"), key=lambda p: p.stat().st_size)
    with sst.open("r+b") as f:
        f.truncate(sst.stat().st_size // 2)


def test_corrupt_partitions_are_moved_aside_and_rebuilt_from_the_topics(
        stack: Stack, tmp_path: Path) -> None:
    state, port = tmp_path / "engine-state", free_port()
    first = engine(stack, port, state, "engine1")
    stack.spawn("worker", APP, log="worker")
    wait_for(lambda: any(f["id"] == "durable-awaiting"
                         for f in (api(port, "/v1/functions") or {"data": []})["data"]),
             60, "functions registered")
    client = sdk.Client(app_id="durable", settings=stack.settings)
    loads = client.send_sync([sdk.Event(name="durable/load", data={"n": i}) for i in range(24)])
    keys = [f"k{i}" for i in range(6)]
    awaiting = client.send_sync([sdk.Event(name="durable/awaiting", data={"key": k})
                            for k in keys])
    wait_for(lambda: all(status(port, i) == "Completed" for i in loads), 60, "load runs")
    wait_for(lambda: all(is_waiting(port, i) for i in awaiting), 60, "runs waiting")
    before = api(port, "/v1/state/hash")["hash"]
    stop(first)

    n = stack.settings.partitions
    go_p, abort_p = partition_for("durable/go", n), partition_for("durable/abort", n)
    truncated = [state / "runs-0", state / f"waits-{go_p}"]
    garbage = [state / "runs-1", state / f"waits-{abort_p}"]
    for db in truncated:
        truncate_an_sst(db)
    for db in garbage:
        (db / "CURRENT").write_bytes(b"\x00\xffnot a manifest\n")

    started = time.monotonic()
    second = engine(stack, port, state, "engine2")
    wait_for(lambda: (api(port, "/v1/state/hash") or {}).get("hash") == before, 60,
             "the state to be rebuilt to the same hash")
    took = time.monotonic() - started
    assert second.poll() is None, "the engine exited"
    log = (tmp_path / "engine2.log").read_text()
    for db in [*truncated, *garbage]:
        [aside] = list(state.glob(db.name + ".corrupt-*"))
        assert (aside / "CURRENT").exists()
        [line] = [ln for ln in log.splitlines() if f"{db}:" in ln and "corrupt" in ln]
        assert "ERROR" in line and str(aside) in line, line
    assert took < 30, f"rebuild took {took:.1f} s"

    # The rebuilt matcher still holds every wait: answers and cancels land.
    client.send_sync([sdk.Event(name="durable/go", data={"key": k, "n": 1}) for k in keys[:3]])
    client.send_sync([sdk.Event(name="durable/abort", data={"key": k}) for k in keys[3:]])
    wait_for(lambda: [status(port, i) for i in awaiting] ==
             ["Completed"] * 3 + ["Cancelled"] * 3, 60, "waits resolved and cancelled")
    assert runs_of(port, awaiting[0])[0]["output"] == {"key": "k0", "n": 1}
    client.close()


def test_engine_that_cannot_open_its_state_exits_at_once(stack: Stack, tmp_path: Path
                                                         ) -> None:
    state, port = tmp_path / "engine-state", free_port()
    state.mkdir()
    for p in range(stack.settings.partitions):
        (state / f"runs-{p}").write_text("a file where a database directory belongs")
    started = time.monotonic()
    proc = engine(stack, port, state, "engine")
    assert proc.wait(60) == 1
    assert time.monotonic() - started < 30
    assert "engine stopped unexpectedly" in (tmp_path / "engine.log").read_text()


def damage_data_blocks(db: Path) -> None:
    """Overwrite the first half of every .sst (its data blocks; the index and footer
    at the end stay intact, so RocksDB finds the damage only when it reads a block)."""
    for sst in db.glob("*.sst"):
        with sst.open("r+b") as f:
            f.write(b"\xa5" * (sst.stat().st_size // 2))


def waiter_client(settings: Any) -> sdk.Client:
    client = sdk.Client(app_id="rot", settings=settings)

    @client.create_function(fn_id="waiter", trigger=sdk.TriggerEvent(event="rot/start"))
    async def waiter(ctx: sdk.Context) -> Any:
        got = await ctx.step.wait_for_event("go", event="rot/go", match="data.key",
                                            timeout=datetime.timedelta(minutes=2))
        return None if got is None else got.data["n"]

    return client


def waiting_all(stack: Stack, ids: list[str], kind: str) -> None:
    """Wait until every run of ``ids`` waits on ``kind`` (an event, a timer)."""
    def waiting(event_id: str) -> bool:
        runs = stack.runs_for(event_id)
        return bool(runs) and (runs[0].get("waiting") or {}).get("kind") == kind
    wait_for(lambda: all(waiting(i) for i in ids), 60, f"every run to wait on {kind}")


def restart_with_state_in_ssts(stack: Stack, state: Path) -> Any:
    """Stop the engine, flush every runs database into .sst files (which the restarted
    engine opens and verifies intact), and start it again."""
    assert stack.engine is not None
    stack.engine.stop()
    for p in range(stack.settings.partitions):
        store = PartitionStore(state / f"runs-{p}")
        store.db.flush()
        store.close()
    return stack.start_engine(state)


def outputs_once_completed(stack: Stack, ids: list[str]) -> list[Any]:
    def outputs() -> list[Any] | None:
        try:
            runs = [stack.runs_for(i) for i in ids]
        except Exception:  # queries read the damaged database until it is replaced
            return None
        if all(r and r[0]["status"] == "completed" for r in runs):
            return [r[0]["output"] for r in runs]
        return None
    return list(wait_for(outputs, 60, "every run to complete"))


def test_damage_found_while_running_rebuilds_the_partition_in_place(
        stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "state"
    stack.start_engine(state)
    client = waiter_client(stack.settings)
    stack.client = client
    stack.start_worker(client)
    stack.wait_functions("rot-waiter")
    pad = "x" * 3000  # big states: a partition's runs span many blocks
    keys = [f"k{i}" for i in range(40)]
    ids = client.send_sync([sdk.Event(name="rot/start", data={"key": k, "pad": pad})
                       for k in keys])
    waiting_all(stack, ids, "event")
    engine = restart_with_state_in_ssts(stack, state)
    assert not list(state.glob("*.corrupt-*"))
    damage_data_blocks(state / "runs-0")

    client.send_sync([sdk.Event(name="rot/go", data={"key": k, "n": i})
                 for i, k in enumerate(keys)])
    assert outputs_once_completed(stack, ids) == list(range(40))
    [aside] = state.glob("*.corrupt-*")
    assert aside.name.startswith("runs-0.corrupt-")
    assert engine.alive and engine.error is None
    client.close()


def test_damage_found_by_the_timer_pass_rebuilds_the_partition_in_place(
        stack: Stack, tmp_path: Path) -> None:
    """The timer pass, not the fold, is the first to read the damaged blocks: sleeping
    runs whose timers come due after the damage. It used to end the engine."""
    state = tmp_path / "state"
    stack.start_engine(state)
    client = sdk.Client(app_id="rotnap", settings=stack.settings)

    @client.create_function(fn_id="napper", trigger=sdk.TriggerEvent(event="rot/nap"))
    async def napper(ctx: sdk.Context) -> Any:
        await ctx.step.sleep_until("nap", datetime.datetime.fromtimestamp(
            ctx.event.data["wake_ms"] / 1000, tz=datetime.UTC))
        return ctx.event.data["n"]

    stack.client = client
    stack.start_worker(client)
    stack.wait_functions("rotnap-napper")
    wake_ms = int(time.time() * 1000) + 15_000
    ids = client.send_sync([sdk.Event(name="rot/nap", data={"n": i, "wake_ms": wake_ms,
                                                       "pad": "x" * 3000})
                       for i in range(40)])
    waiting_all(stack, ids, "timer")
    engine = restart_with_state_in_ssts(stack, state)
    assert int(time.time() * 1000) < wake_ms - 3000, "restart took too long to test"
    for p in range(stack.settings.partitions):
        damage_data_blocks(state / f"runs-{p}")
    assert outputs_once_completed(stack, ids) == list(range(40))
    assert list(state.glob("runs-*.corrupt-*")), "no damaged partition was set aside"
    assert engine.alive and engine.error is None
    client.close()
