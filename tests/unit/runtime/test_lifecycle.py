"""Where the processor sends a run's ``stepstream/function.*`` events (no broker)."""

from __future__ import annotations

import pytest

from engine.fold import Emit
from engine.runtime.lifecycle import place
from engine.runtime.router import Registry
from tests.unit.runtime.test_router import function, registry
from topics.records import FUNCTION_FAILED_EVENT, FUNCTION_FINISHED, Event, TimerFired
from topics.settings import Settings, SettingsError


def ending(name: str = FUNCTION_FINISHED, fn: str = "shop-charge") -> Emit:
    ev = Event(name=name, data={"function_id": fn, "run_id": "R1", "status": "completed"},
               id="E9", ts=5)
    return Emit("events", ev.id, ev)


def test_an_ending_nobody_triggers_on_goes_only_to_waits_under_its_name() -> None:
    e = ending()
    placed = place(e, registry(function("other", "shop/order.created")), "listened")
    assert placed == Emit("waits", FUNCTION_FINISHED, e.record)


def test_an_ending_a_trigger_matches_goes_to_events() -> None:
    reg = registry(function("audit", FUNCTION_FINISHED,
                            expression="event.data.function_id == 'shop-charge'"))
    assert place(ending(), reg, "listened") == ending()
    # The trigger's CEL filter decides, as in the router: another function's ending
    # starts no run, so it needs only the waits record.
    assert place(ending(fn="shop-ship"), reg, "listened").topic == "waits"
    # and a trigger on finished says nothing about failed.
    assert place(ending(FUNCTION_FAILED_EVENT), reg, "listened").topic == "waits"


def test_wildcards_count_only_when_they_name_engine_events() -> None:
    assert place(ending(), registry(function("any", "*")), "listened").topic == "waits"
    assert place(ending(), registry(function("eng", "stepstream/*")), "listened").topic == \
        "events"


def test_the_registry_answer_follows_registrations_and_removals() -> None:
    reg = Registry()
    assert place(ending(), reg, "listened").topic == "waits"
    reg.apply(function("audit", FUNCTION_FINISHED))
    assert place(ending(), reg, "listened").topic == "events"
    reg.remove("audit")
    assert place(ending(), reg, "listened").topic == "waits"


def test_all_keeps_every_ending_on_events_and_other_records_are_untouched() -> None:
    assert place(ending(), Registry(), "all") == ending()
    user = Event(name="shop/order.created", data={}, id="E1", ts=1)
    assert place(Emit("events", "E1", user), Registry(), "listened").topic == "events"
    timer = Emit("runs", "R1", TimerFired(run_id="R1", timer_id="t", due_ms=1, ts=1))
    assert place(timer, Registry(), "listened") == timer


def test_the_setting_is_read_and_checked() -> None:
    assert Settings.from_env({}).lifecycle_events == "listened"
    assert Settings.from_env({"STEPSTREAM_LIFECYCLE_EVENTS": "all"}).lifecycle_events == "all"
    with pytest.raises(SettingsError, match="lifecycle_events"):
        Settings.from_env({"STEPSTREAM_LIFECYCLE_EVENTS": "some"})
