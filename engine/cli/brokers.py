"""Where the brokers and the dev API are: configuration, else what the running
``stepstream dev`` recorded (searched upward from the working folder, then per user),
else the default."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from confluent_kafka import Producer

from topics import brokers
from topics.settings import (
    DEV_API_FILE,
    Settings,
    dev_file_trusted,
    settings_from,
)

DEFAULT_API = "http://127.0.0.1:8288"
HOW_TO_SET = "start `stepstream dev`, or set STEPSTREAM_BROKERS"


def configured_brokers(env: Mapping[str, str]) -> str | None:
    """Brokers set explicitly: ``STEPSTREAM_BROKERS``, else ``KAFKA_BOOTSTRAP_SERVERS``."""
    found = brokers.configured_brokers(env)
    return found[0] if found else None


def read_text(path: PurePath) -> str | None:
    """A file's stripped text, or None if it cannot be read or is not to be trusted
    (:func:`topics.settings.dev_file_trusted`)."""
    try:
        file = Path(path)
        st, folder = file.stat(), file.parent.stat()
        if not dev_file_trusted(st.st_uid, st.st_mode, folder.st_uid, folder.st_mode,
                                os.getuid()):
            return None
        return file.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def find_dev_file(name: str, env: Mapping[str, str],
                  cwd: Path | None = None) -> tuple[str, Path] | None:
    """The first non-empty file ``name`` that ``stepstream dev`` wrote: its text and path."""
    found = brokers.find_dev_file(name, cwd or Path.cwd(), env, read_text)
    return None if found is None else (found[0], Path(found[1]))


def resolve_brokers(env: Mapping[str, str], cwd: Path | None = None) -> tuple[str, str]:
    """The broker address and where it came from (for error messages): see
    :func:`topics.brokers.resolve_brokers`."""
    return brokers.resolve_brokers(env, cwd or Path.cwd(), read_text)


def resolve_api(explicit: str | None, env: Mapping[str, str],
                cwd: Path | None = None) -> tuple[str, str]:
    """The HTTP API's base URL and where it came from: ``explicit`` (``--api``),
    ``STEPSTREAM_API``, the address ``stepstream dev`` recorded, or the default."""
    if explicit:
        return explicit.rstrip("/"), "--api"
    if env.get("STEPSTREAM_API"):
        return env["STEPSTREAM_API"].rstrip("/"), "STEPSTREAM_API"
    found = find_dev_file(DEV_API_FILE, env, cwd)
    if found:
        return found[0].rstrip("/"), str(found[1])
    return DEFAULT_API, "the default"


def load_settings(env: Mapping[str, str], cwd: Path | None = None) -> Settings:
    """``Settings.from_env`` with the brokers resolved by :func:`resolve_brokers`.
    Raises ``topics.settings.SettingsError`` on a malformed variable."""
    address, _ = resolve_brokers(env, cwd)
    return settings_from(env, brokers=address, read_text=read_file, trial_client=trial_client)


def trial_client(config: dict[str, Any]) -> None:
    """Build (and drop) a producer from ``config`` alone: librdkafka checks every name
    and value as it is set. Its log lines are dropped: there is no broker to reach."""
    Producer({**config, "logger": logging.getLogger("stepstream.kafka.trial")}).flush(0)


def read_file(path: str) -> str:
    """A file's text (for ``STEPSTREAM_KAFKA_CONFIG``)."""
    return Path(path).read_text()
