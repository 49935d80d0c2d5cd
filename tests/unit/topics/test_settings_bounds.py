"""Whole-number settings: read from the environment, each held to its lower bound with a
message naming it (STEPSTREAM_API_THREADS, the time and size settings)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from topics.settings import Settings, SettingsError


def test_api_threads_default_env_and_refusals() -> None:
    assert Settings().api_threads == 1
    assert Settings.from_env({"STEPSTREAM_API_THREADS": "4"}).api_threads == 4
    with pytest.raises(SettingsError, match="STEPSTREAM_API_THREADS must be an integer"):
        Settings.from_env({"STEPSTREAM_API_THREADS": "many"})
    with pytest.raises(SettingsError, match="api_threads must be at least 1"):
        Settings.from_env({"STEPSTREAM_API_THREADS": "0"})


@pytest.mark.parametrize(("env", "value", "message"), [
    ("SESSION_TIMEOUT_MS", "0", "session_timeout_ms must be at least 1, got 0"),
    ("PARTITIONS", "-3", "partitions must be at least 1, got -3"),
    ("LINGER_MS", "-1", "linger_ms must be 0 or more, got -1"),
    ("RETRY_BACKOFF_BASE_MS", "-5", "retry_backoff_base_ms must be 0 or more, got -5"),
    ("SNAPSHOT_INTERVAL_MS", "-1", r"snapshot_interval_ms must be 0 \(off\) or more"),
])
def test_a_setting_below_its_bound_is_refused_by_name(env: str, value: str,
                                                      message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({f"STEPSTREAM_{env}": value})


def test_every_whole_number_setting_has_a_bound_its_default_meets() -> None:
    for f in fields(Settings):
        if f.type == "int":
            assert getattr(Settings(), f.name) >= f.metadata.get("min", 0), f.name
    assert Settings.from_env({"STEPSTREAM_LINGER_MS": "0",
                              "STEPSTREAM_SNAPSHOT_INTERVAL_MS": "0"}).linger_ms == 0
