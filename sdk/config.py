"""Where the SDK finds its broker and settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from topics.settings import DEV_BROKER_ADDRESS, DEV_BROKER_FILE, Settings


def resolve_brokers(brokers: str | None, env: Mapping[str, str], cwd: Path | None = None) -> str:
    """The bootstrap servers, first found of: the argument, ``STEPSTREAM_BROKERS``,
    ``KAFKA_BOOTSTRAP_SERVERS``, the address ``stepstream dev`` wrote to
    :data:`~topics.settings.DEV_BROKER_FILE`, and :data:`~topics.settings.DEV_BROKER_ADDRESS`.
    """
    if brokers:
        return brokers
    for name in ("STEPSTREAM_BROKERS", "KAFKA_BOOTSTRAP_SERVERS"):
        if env.get(name):
            return env[name]
    path = (cwd or Path.cwd()) / DEV_BROKER_FILE
    try:
        written = path.read_text().strip()
    except OSError:
        written = ""
    return written or DEV_BROKER_ADDRESS


def load_settings(brokers: str | None = None, env: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> Settings:
    """Settings from the environment (``STEPSTREAM_*``) with the brokers resolved."""
    env = os.environ if env is None else env
    return Settings.from_env(env, brokers=resolve_brokers(brokers, env, cwd))
