"""The cron service without a broker (a real RocksDB store, the real fold): which ticks
are due, the latest-missed-tick rule, firing again while the fold has not recorded a
tick, partitions that are not live or not ours, and TriggerCron(jitter=...)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest

import sdk
from engine import fold
from engine.runtime.cron import (
    RECHECK_MS,
    REFIRE_MS,
    CronService,
    cron_partition_key,
    jitter_for,
)
from engine.runtime.router import Registry
from engine.store.partition import PartitionStore
from engine.store.view import BatchView
from topics.catalog import Catalog, partition_for
from topics.cron import parse_cron
from topics.records import CRON_EVENT, FunctionRegistered, RunRequested
from topics.settings import Settings

HOUR = 3_600_000
MINUTE = 60_000
# Registered at 00:30; the schedule ticks on every hour.
MIDNIGHT = int(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp() * 1000)
REGISTERED = MIDNIGHT + 30 * MINUTE
HOURLY = "0 * * * *"
CATALOG = Catalog(Settings())
PARTITION = partition_for(cron_partition_key("tick"), CATALOG.partitions)


def registry(*crons: str) -> Registry:
    reg = Registry()
    reg.apply(FunctionRegistered(fn_id="tick", app_id="app", name="tick", retries=0,
                                 ts=REGISTERED, triggers=[{"cron": c} for c in crons]))
    return reg


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[dict[int, PartitionStore]]:
    store = PartitionStore(tmp_path / f"runs-{PARTITION}")
    yield {PARTITION: store}
    store.close()


def live(_p: int) -> bool:
    return True


def ticks(runs: list[RunRequested]) -> list[int]:
    return [int((r.cron or {})["tick_ms"]) for r in runs]


def fold_into(store: PartitionStore, runs: list[RunRequested]) -> None:
    """What the processor does with the requests: produce them, then fold them."""
    view = BatchView(store)
    for r in runs:
        fold.apply(view, r)
    view.commit(store.next_offset() + len(runs))


def test_nothing_is_due_before_the_first_tick_after_registration(
        stores: dict[int, PartitionStore]) -> None:
    service = CronService(CATALOG, backoff_base_ms=1000)
    # The midnight tick came before the function existed: it is not "missed".
    assert service.due(registry(HOURLY), stores, live, REGISTERED + 10 * MINUTE) == []
    assert service.next_due == MIDNIGHT + HOUR


def test_after_an_outage_only_the_latest_missed_tick_fires_once(
        stores: dict[int, PartitionStore]) -> None:
    service = CronService(CATALOG, backoff_base_ms=1000)
    now = MIDNIGHT + 5 * HOUR + 10 * MINUTE
    runs = service.due(registry(HOURLY), stores, live, now)
    assert ticks(runs) == [MIDNIGHT + 5 * HOUR]
    req = runs[0]
    assert (req.fn_id, req.partition_key, req.ts) == ("tick", cron_partition_key("tick"), now)
    assert req.event["name"] == CRON_EVENT
    assert req.event["data"] == {"cron": HOURLY, "tick_ms": MIDNIGHT + 5 * HOUR}
    assert req.dedupe_key == f"tick\x1fcron\x1f{HOURLY}\x1f{MIDNIGHT + 5 * HOUR}"


def test_a_recorded_tick_is_not_fired_again_and_the_next_one_is(
        stores: dict[int, PartitionStore]) -> None:
    reg = registry(HOURLY)
    service = CronService(CATALOG, backoff_base_ms=1000)
    now = MIDNIGHT + HOUR + MINUTE
    fired = service.due(reg, stores, live, now)
    assert ticks(fired) == [MIDNIGHT + HOUR]
    fold_into(stores[PARTITION], fired)
    assert service.due(reg, stores, live, now + REFIRE_MS) == []
    assert service.next_due == MIDNIGHT + 2 * HOUR
    # Four hours later, from the recorded tick: the latest missed one only.
    later = MIDNIGHT + 5 * HOUR + MINUTE
    assert ticks(service.due(reg, stores, live, later)) == [MIDNIGHT + 5 * HOUR]


def test_a_tick_the_fold_has_not_recorded_is_fired_again_after_the_refire_delay(
        stores: dict[int, PartitionStore]) -> None:
    reg = registry(HOURLY)
    service = CronService(CATALOG, backoff_base_ms=1000)
    now = MIDNIGHT + HOUR
    first = service.due(reg, stores, live, now)
    assert ticks(first) == [MIDNIGHT + HOUR]
    # In flight: looked at again soon, and fired again only once REFIRE_MS has passed
    # (the processor asks again at every next_due it is given).
    t = now
    again: list[RunRequested] = []
    while not again:
        assert service.next_due is not None and t < service.next_due < now + 2 * REFIRE_MS
        t = service.next_due
        again = service.due(reg, stores, live, t)
    assert now + REFIRE_MS <= t <= now + REFIRE_MS + RECHECK_MS
    # The same run: the fold starts one whichever copy arrives first.
    assert [r.run_id for r in again] == [r.run_id for r in first]
    fold_into(stores[PARTITION], first + again)
    runs = list(stores[PARTITION].run_ids())
    assert runs == [first[0].run_id]


def test_each_schedule_of_a_function_fires_on_its_own(
        stores: dict[int, PartitionStore]) -> None:
    service = CronService(CATALOG, backoff_base_ms=1000)
    runs = service.due(registry(HOURLY, "30 * * * *"), stores, live, MIDNIGHT + 90 * MINUTE)
    assert sorted(ticks(runs)) == [MIDNIGHT + HOUR, MIDNIGHT + 90 * MINUTE]
    assert len({r.run_id for r in runs}) == 2


def test_a_partition_still_restoring_fires_nothing_and_is_looked_at_again_soon(
        stores: dict[int, PartitionStore]) -> None:
    reg = registry(HOURLY)
    service = CronService(CATALOG, backoff_base_ms=1000)
    now = MIDNIGHT + 2 * HOUR
    asked: list[int] = []

    def restoring(p: int) -> bool:
        asked.append(p)
        return False

    assert service.due(reg, stores, restoring, now) == []
    assert asked == [PARTITION]
    assert service.next_due == now + RECHECK_MS
    assert ticks(service.due(reg, stores, live, now + RECHECK_MS)) == [MIDNIGHT + 2 * HOUR]


def test_only_the_owner_of_the_schedules_partition_fires_it(
        stores: dict[int, PartitionStore]) -> None:
    service = CronService(CATALOG, backoff_base_ms=1000)
    asked: list[int] = []

    def is_live(p: int) -> bool:
        asked.append(p)
        return True

    store = stores[PARTITION]
    not_ours = {(PARTITION + 1) % CATALOG.partitions: store}
    assert service.due(registry(HOURLY), not_ours, is_live, MIDNIGHT + 2 * HOUR) == []
    assert (asked, service.next_due) == ([], None)


def test_a_changed_registry_is_looked_at_before_the_next_due_time(
        stores: dict[int, PartitionStore]) -> None:
    service = CronService(CATALOG, backoff_base_ms=1000)
    now = MIDNIGHT + 2 * HOUR + MINUTE
    assert service.due(Registry(), stores, live, now) == []
    assert service.next_due is None
    assert ticks(service.due(registry(HOURLY), stores, live, now)) == [MIDNIGHT + 2 * HOUR]


# -- TriggerCron(jitter=...): a tick is due at its time plus a delay derived from function
# and tick alone (the same in every engine); a delay never carries a tick past the next.

JITTER = 10 * MINUTE


def jittered_registry(jitter: str | None) -> Registry:
    trigger = sdk.TriggerCron(cron=HOURLY, jitter=jitter).to_wire()
    reg = Registry()
    reg.apply(FunctionRegistered(fn_id="tick", app_id="app", name="tick", retries=0,
                                 ts=REGISTERED, triggers=[trigger]))
    return reg




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
    reg = jittered_registry("10m")
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
    reg = jittered_registry("2h")  # longer than the hourly interval: documented as capped
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
