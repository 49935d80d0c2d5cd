"""Where the SDK finds its broker and settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import confluent_kafka

import topics.brokers
from topics.settings import (
    Settings,
    dev_file_trusted,
    settings_from,
)


def resolve_brokers_from(brokers: str | None, env: Mapping[str, str],
                         cwd: Path | None = None) -> tuple[str, str]:
    """The bootstrap servers and where they came from (for error messages): the
    argument, ``STEPSTREAM_BROKERS``, ``KAFKA_BOOTSTRAP_SERVERS``, the address
    ``stepstream dev`` wrote to :data:`~topics.settings.DEV_BROKER_FILE` (in the working
    folder, a parent, or ``$HOME``), else :data:`~topics.settings.DEV_BROKER_ADDRESS`."""
    return topics.brokers.resolve_brokers(env, cwd or Path.cwd(), _read_text, given=brokers,
                                          given_source="the brokers given to sdk.Client")


def _read_text(path: PurePath) -> str | None:
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


def resolve_brokers(brokers: str | None, env: Mapping[str, str], cwd: Path | None = None) -> str:
    """The bootstrap servers: see :func:`resolve_brokers_from`."""
    return resolve_brokers_from(brokers, env, cwd)[0]


def load_settings(brokers: str | None = None, env: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> Settings:
    """Settings from the environment (``STEPSTREAM_*``) with the brokers resolved."""
    env = os.environ if env is None else env
    return settings_from(env, brokers=resolve_brokers(brokers, env, cwd),
                         read_text=_read_file, trial_client=_trial_client)


def _trial_client(config: dict[str, Any]) -> None:
    confluent_kafka.Producer({**config, "logger": logging.getLogger("stepstream.kafka.trial")}
                             ).flush(0)


def _read_file(path: str) -> str:
    return Path(path).read_text()


def broker_source(brokers: str | None, env: Mapping[str, str] | None = None) -> str:
    """Where the address ``brokers`` most likely came from, for an error message."""
    found, source = resolve_brokers_from(None, os.environ if env is None else env)
    return source if found == brokers else "the client's settings"
