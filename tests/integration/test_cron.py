"""Cron triggers on the real broker: ticks start runs carrying their tick time, an engine
restart fires the latest missed tick once, and with two engine processes one of which
is killed, every tick still starts exactly one run."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import sdk
from tests.integration.harness import Stack, wait_for
from topics.cron import parse_cron
from topics.settings import Settings

pytestmark = pytest.mark.kafka

EVERY_2S = "* * * * * */2"


class Journal:
    """(tick_ms, run_id) of every execution of the cron function's step."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[int | None, str]] = []

    def add(self, tick: int | None, run_id: str) -> None:
        with self.lock:
            self.entries.append((tick, run_id))

    def ticks(self) -> list[int]:
        with self.lock:
            return [t for t, _ in self.entries if t is not None]

    def runs_per_tick(self) -> Counter[int]:
        with self.lock:
            return Counter(t for t, _ in set(self.entries) if t is not None)

    def executions_per_tick(self) -> Counter[int]:
        with self.lock:
            return Counter(t for t, _ in self.entries if t is not None)


def make_client(settings: Settings, journal: Journal, app_id: str) -> sdk.Client:
    client = sdk.Client(app_id=app_id, settings=settings)

    @client.create_function(fn_id="ticker", trigger=[sdk.TriggerCron(cron=EVERY_2S),
                                                     sdk.TriggerEvent(event=f"{app_id}/manual")])
    async def ticker(ctx: sdk.Context) -> Any:
        tick = ctx.cron_tick
        ms = None if tick is None else int(tick.timestamp() * 1000)
        await ctx.step.run("record", lambda: journal.add(ms, ctx.run_id))
        return {"tick": ms, "event": ctx.event.name}

    return client


def test_cron_ticks_start_runs_with_their_tick_and_restart_fires_latest_missed_once(
        broker: str, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path)
    journal = Journal()
    client = make_client(stack.settings, journal, "crona")
    try:
        stack.start_engine()
        stack.start_worker(client)
        stack.wait_functions("crona-ticker")
        wait_for(lambda: len(journal.ticks()) >= 2, 30, "two cron ticks")
        schedule = parse_cron(EVERY_2S)
        for tick in journal.ticks():
            assert schedule.latest_at_or_before(tick) == tick  # a real tick time
        # The event trigger of the same function still works, without a tick.
        [event_id] = client.send_sync(sdk.Event(name="crona/manual", data={}))
        manual = stack.finished_run(event_id)
        assert manual["output"] == {"tick": None, "event": "crona/manual"}

        # Everything is down for a while: several ticks are missed.
        stack.engine.stop()  # type: ignore[union-attr]
        # Ticks up to the stop may have fired before it and run after the restart; every
        # tick after the stop can only have been fired by the restarted engine.
        stopped_at = int(time.time() * 1000)
        time.sleep(5)  # the outage itself, not synchronisation
        restarted_at = int(time.time() * 1000)
        stack.start_engine()
        wait_for(lambda: [t for t in journal.ticks() if t > stopped_at], 30,
                 "the first tick after the restart")
        first = min(t for t in journal.ticks() if t > stopped_at)
        run_id = next(r for t, r in journal.entries if t == first)
        fired_at = stack.run(run_id)["requested_at"]  # type: ignore[index]
        # Fired on recovery, for the latest tick due then; the earlier missed ones
        # (at least one: the outage lasted 5 s of a 2 s schedule) were skipped.
        assert fired_at >= restarted_at
        assert schedule.latest_at_or_before(fired_at) == first
        assert schedule.next_after(stopped_at) < first
        wait_for(lambda: [t for t in journal.ticks() if t > first], 30, "regular ticks again")
        assert max(journal.executions_per_tick().values()) == 1
    finally:
        stack.close()
        client.close()


def test_cron_tick_while_one_of_two_engine_processes_is_killed(
        broker: str, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path)
    journal = Journal()
    client = make_client(stack.settings, journal, "cronb")
    engines = [stack.spawn("engine", "--port", str(port), "--state-dir",
                           str(tmp_path / f"engine-{i}"), "--no-create-topics",
                           log=f"engine-{i}")
               for i, port in enumerate((_free_port(), _free_port()))]
    try:
        stack.start_worker(client)
        wait_for(lambda: len(journal.ticks()) >= 3, 60, "cron ticks with two engines")
        os.kill(engines[0].pid, signal.SIGKILL)
        engines[0].wait()
        killed_at = int(time.time() * 1000)
        # The survivor takes the partitions over (session timeout) and goes on ticking.
        wait_for(lambda: len([t for t in journal.ticks() if t > killed_at]) >= 3, 90,
                 "ticks after one engine was killed")
    finally:
        stack.close()
        client.close()
    per_tick = journal.executions_per_tick()
    assert per_tick and max(per_tick.values()) == 1, per_tick
    ticks = sorted(per_tick)
    schedule = parse_cron(EVERY_2S)
    for a, b in itertools.pairwise(ticks):
        assert schedule.next_after(a) <= b  # distinct real ticks, in order


def _free_port() -> int:
    from engine.cli.devbroker import free_port

    return free_port()

