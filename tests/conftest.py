"""Shared fixtures: one real Tansu broker per test session (integration tests only)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

# A property's examples are judged on what they assert, not on how fast a shared 2-core
# machine runs them: hypothesis's default 200 ms deadline failed a pure test under load.
settings.register_profile("stepstream", deadline=None)
settings.load_profile("stepstream")


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """The address of the session's broker: STEPSTREAM_TEST_BROKERS if set (a real Kafka
    cluster), else a Tansu dev broker started for this session on a free port."""
    external = os.environ.get("STEPSTREAM_TEST_BROKERS")
    if external:
        yield external
        return
    from engine.cli.devbroker import DevBroker

    with DevBroker() as dev:
        yield dev.address
