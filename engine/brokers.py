"""Where the brokers are: configuration, else the running dev broker, else the default."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from topics.settings import DEV_BROKER_ADDRESS, DEV_BROKER_FILE, Settings


def configured_brokers(env: Mapping[str, str]) -> str | None:
    """Brokers set explicitly: ``STEPSTREAM_BROKERS``, else ``KAFKA_BOOTSTRAP_SERVERS``."""
    return env.get("STEPSTREAM_BROKERS") or env.get("KAFKA_BOOTSTRAP_SERVERS") or None


def resolve_brokers(env: Mapping[str, str], cwd: Path | None = None) -> tuple[str, str]:
    """The broker address and where it came from (for error messages): configuration,
    the address ``stepstream dev`` wrote to ``DEV_BROKER_FILE``, or the default."""
    configured = configured_brokers(env)
    if configured:
        source = ("STEPSTREAM_BROKERS" if env.get("STEPSTREAM_BROKERS")
                  else "KAFKA_BOOTSTRAP_SERVERS")
        return configured, source
    path = (cwd or Path.cwd()) / DEV_BROKER_FILE
    try:
        written = path.read_text().strip()
    except OSError:
        written = ""
    if written:
        return written, str(DEV_BROKER_FILE)
    return DEV_BROKER_ADDRESS, "the default dev broker address"


def load_settings(env: Mapping[str, str], cwd: Path | None = None) -> Settings:
    """``Settings.from_env`` with the brokers resolved by :func:`resolve_brokers`.
    Raises ``topics.settings.SettingsError`` on a malformed variable."""
    brokers, _ = resolve_brokers(env, cwd)
    return Settings.from_env(env, brokers=brokers)
