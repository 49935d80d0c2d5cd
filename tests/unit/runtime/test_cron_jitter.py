"""TriggerCron(jitter=...) in the cron service, without a broker: a tick is due at its
time plus a delay derived from function and tick alone (the same in every engine), and a
delay never carries a tick past the next one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import sdk
from engine.runtime.cron import RECHECK_MS, CronService, jitter_for
from engine.runtime.router import Registry
from engine.store.partition import PartitionStore
from tests.unit.runtime.test_cron_service import (
    CATALOG,
    HOUR,
    HOURLY,
    MIDNIGHT,
    MINUTE,
    PARTITION,
    REGISTERED,
    fold_into,
    live,
    ticks,
)
from topics.cron import parse_cron
from topics.records import FunctionRegistered

JITTER = 10 * MINUTE


def registry(jitter: str | None) -> Registry:
    trigger = sdk.TriggerCron(cron=HOURLY, jitter=jitter).to_wire()
    reg = Registry()
    reg.apply(FunctionRegistered(fn_id="tick", app_id="app", name="tick", retries=0,
                                 ts=REGISTERED, triggers=[trigger]))
    return reg


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[dict[int, PartitionStore]]:
    store = PartitionStore(tmp_path / f"runs-{PARTITION}")
    yield {PARTITION: store}
    store.close()


def test_jitter_is_deterministic_bounded_and_spread() -> None:
    schedule = parse_cron(HOURLY)
    schedule.jitter_ms = JITTER
    delays = [jitter_for("tick", schedule, MIDNIGHT + h * HOUR) for h in range(48)]
    assert delays == [jitter_for("tick", schedule, MIDNIGHT + h * HOUR) for h in range(48)]
    assert all(0 <= d <= JITTER for d in delays)
    assert len(set(delays)) > 40  # spread, not one fixed offset
    other = [jitter_for("other", schedule, MIDNIGHT + h * HOUR) for h in range(48)]
    assert other != delays  # functions on the same schedule do not start together
    schedule.jitter_ms = 0
    assert jitter_for("tick", schedule, MIDNIGHT) == 0


def test_a_jittered_tick_fires_at_its_delay_and_carries_its_scheduled_time(
        stores: dict[int, PartitionStore]) -> None:
    reg = registry("10m")
    tick = MIDNIGHT + HOUR
    delay = jitter_for("tick", reg.functions["tick"].crons[0], tick)
    assert delay > 0  # else this test shows nothing; the hash of this tick is fixed
    service = CronService(CATALOG, backoff_base_ms=1000)
    assert service.due(reg, stores, live, tick) == []
    assert service.next_due == tick + delay
    assert service.due(reg, stores, live, tick + delay - 1) == []
    runs = service.due(reg, stores, live, tick + delay)
    assert ticks(runs) == [tick]
    assert runs[0].event["ts"] == tick


def test_a_delay_never_carries_a_tick_past_the_next(
        stores: dict[int, PartitionStore]) -> None:
    reg = registry("2h")  # longer than the hourly interval: documented as capped
    service = CronService(CATALOG, backoff_base_ms=1000)
    schedule = reg.functions["tick"].crons[0]
    # Find an hour whose tick is still waiting out its delay at the next tick's time.
    hour = next(h for h in range(2, 50)
                if jitter_for("tick", schedule, MIDNIGHT + h * HOUR) > MINUTE)
    now = MIDNIGHT + hour * HOUR + 1
    runs = service.due(reg, stores, live, now)
    assert ticks(runs) == [MIDNIGHT + (hour - 1) * HOUR]  # the tick before fires now
    fold_into(stores[PARTITION], runs)
    # Once the fold recorded it, the waiting tick is due at its own delay, not before.
    assert service.due(reg, stores, live, now + RECHECK_MS) == []
    assert service.next_due == MIDNIGHT + hour * HOUR + jitter_for(
        "tick", schedule, MIDNIGHT + hour * HOUR)


def test_trigger_cron_checks_its_jitter() -> None:
    assert sdk.TriggerCron(cron=HOURLY).to_wire() == {"cron": HOURLY}
    assert sdk.TriggerCron(cron=HOURLY, jitter="30s").to_wire() == {"cron": HOURLY,
                                                                     "jitter_ms": 30_000}
    for bad in ("soon", -1, "2d", True):
        with pytest.raises(sdk.ConfigError, match="jitter"):
            sdk.TriggerCron(cron=HOURLY, jitter=bad)  # type: ignore[arg-type]
