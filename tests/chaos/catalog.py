"""Every scenario of the campaign, by the name ``--only`` takes, in the order they run."""

from __future__ import annotations

from collections.abc import Callable

from tests.chaos.fuzz import http_fuzz
from tests.chaos.poison import poison
from tests.chaos.scenarios import (
    Options,
    Result,
    both_kill,
    engine_kill,
    engine_outage,
    rebalance_storm,
    state_damage,
    worker_kill,
)
from tests.chaos.stack import ChaosStack

Scenario = Callable[[ChaosStack, Options], Result]

SCENARIOS: dict[str, Scenario] = {
    "engine-kill": engine_kill,
    "worker-kill": worker_kill,
    "engine+worker-kill": both_kill,
    "rebalance-storm": rebalance_storm,
    "engine-outage": engine_outage,
    "poison": poison,
    "http-fuzz": http_fuzz,
    "state-damage": state_damage,
}


def describe(name: str) -> str:
    """The scenario's docstring on one line."""
    return " ".join((SCENARIOS[name].__doc__ or "").split())
