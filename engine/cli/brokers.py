"""Where the brokers and the dev API are: configuration, else what the running
``stepstream dev`` recorded (searched upward from the working folder, then per user),
else the default."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from topics.settings import (
    DEV_API_FILE,
    DEV_BROKER_ADDRESS,
    DEV_BROKER_FILE,
    Settings,
    dev_file_candidates,
)

DEFAULT_API = "http://127.0.0.1:8288"
HOW_TO_SET = "start `stepstream dev`, or set STEPSTREAM_BROKERS"


def configured_brokers(env: Mapping[str, str]) -> str | None:
    """Brokers set explicitly: ``STEPSTREAM_BROKERS``, else ``KAFKA_BOOTSTRAP_SERVERS``."""
    return env.get("STEPSTREAM_BROKERS") or env.get("KAFKA_BOOTSTRAP_SERVERS") or None


def find_dev_file(name: str, env: Mapping[str, str],
                  cwd: Path | None = None) -> tuple[str, Path] | None:
    """The first non-empty file ``name`` that ``stepstream dev`` wrote (see
    :func:`topics.settings.dev_file_candidates`): its stripped text and path."""
    for candidate in dev_file_candidates(name, cwd or Path.cwd(), env):
        try:
            text = Path(candidate).read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            return text, Path(candidate)
    return None


def resolve_brokers(env: Mapping[str, str], cwd: Path | None = None) -> tuple[str, str]:
    """The broker address and where it came from (for error messages): configuration,
    the address ``stepstream dev`` recorded, or the default."""
    configured = configured_brokers(env)
    if configured:
        source = ("STEPSTREAM_BROKERS" if env.get("STEPSTREAM_BROKERS")
                  else "KAFKA_BOOTSTRAP_SERVERS")
        return configured, source
    found = find_dev_file(DEV_BROKER_FILE, env, cwd)
    if found:
        return found[0], str(found[1])
    return DEV_BROKER_ADDRESS, (f"the default: no {DEV_BROKER_FILE} here, in a parent "
                                f"folder or in $HOME")


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
    brokers, _ = resolve_brokers(env, cwd)
    return Settings.from_env(env, brokers=brokers)
