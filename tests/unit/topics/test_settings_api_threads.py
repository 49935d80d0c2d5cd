"""STEPSTREAM_API_THREADS: read from the environment, refused with a message when bad."""

from __future__ import annotations

import pytest

from topics.settings import Settings, SettingsError


def test_api_threads_default_env_and_refusals() -> None:
    assert Settings().api_threads == 1
    assert Settings.from_env({"STEPSTREAM_API_THREADS": "4"}).api_threads == 4
    with pytest.raises(SettingsError, match="STEPSTREAM_API_THREADS must be an integer"):
        Settings.from_env({"STEPSTREAM_API_THREADS": "many"})
    with pytest.raises(SettingsError, match="api_threads must be at least 1"):
        Settings.from_env({"STEPSTREAM_API_THREADS": "0"})
