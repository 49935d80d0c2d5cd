"""The arguments of Inngest's client constructor, as ``sdk.Client`` takes them.

Those with a meaning here are checked and kept (``middleware`` by :mod:`sdk._middleware`);
the others are refused with the reason, so code ported from Inngest fails at once rather
than quietly ignoring a setting.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdk._errors import ConfigError
from topics.brokers import BROKER_VARIABLES, configured_brokers
from topics.settings import Settings

# Inngest's arguments that have no meaning here, and why.
_NO_MEANING = {
    "signing_key": "workers and the engine talk over Kafka, not signed HTTP requests; "
                   "secure the broker instead (SASL/TLS through STEPSTREAM_KAFKA_*)",
    "signing_key_fallback": "workers and the engine talk over Kafka, not signed HTTP "
                            "requests; secure the broker instead (STEPSTREAM_KAFKA_*)",
    "api_base_url": "the client talks to Kafka, not to an HTTP API; give brokers= "
                    "(or STEPSTREAM_BROKERS)",
    "event_api_base_url": "the client sends events to Kafka, not to an HTTP API; give "
                          "brokers= (or STEPSTREAM_BROKERS)",
    "serializer": "there is no client-wide serializer; give output_type= (a pydantic "
                  "type) to step.run or create_function",
}

# Kafka's topic name characters: env becomes part of every topic's name.
_ENV = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def reject_unsupported(kwargs: Mapping[str, Any]) -> None:
    """Raise TypeError for arguments ``sdk.Client`` does not take, saying why."""
    for name in kwargs:
        reason = _NO_MEANING.get(name)
        if reason is not None:
            raise TypeError(f"sdk.Client: {name}= has no meaning in stepstream: {reason}")
        raise TypeError(f"sdk.Client got an unexpected keyword argument {name!r}")


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The checked Inngest-style options of a client."""

    logger: logging.Logger
    is_production: bool
    event_key: str | None
    env: str | None

    @staticmethod
    def check(*, logger: Any, is_production: Any, event_key: Any, env: Any) -> ClientOptions:
        """Check each argument's type (TypeError/ValueError naming it)."""
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"sdk.Client: logger must be a logging.Logger, "
                            f"got {type(logger).__name__}")
        if is_production is not None and not isinstance(is_production, bool):
            raise TypeError(f"sdk.Client: is_production must be True, False or None, "
                            f"got {type(is_production).__name__}")
        if event_key is not None and (not isinstance(event_key, str) or not event_key):
            raise ValueError("sdk.Client: event_key must be a non-empty string or None")
        if env is not None and (not isinstance(env, str) or not _ENV.match(env)):
            raise ValueError(f"sdk.Client: env must be 1-64 letters, digits, '_' or '-' "
                             f"(it becomes part of topic names), got {env!r}")
        return ClientOptions(
            logger=logger or logging.getLogger("stepstream.function"),
            is_production=bool(is_production),
            event_key=event_key,
            env=env,
        )

    @staticmethod
    def with_env(settings: Settings, env: str | None) -> Settings:
        """``settings`` with the topics of environment ``env``: prefix
        ``"stepstream."`` becomes ``"stepstream.<env>."``. The engine of that environment
        runs with the same ``STEPSTREAM_PREFIX``."""
        if env is None:
            return settings
        return dataclasses.replace(settings, prefix=f"{settings.prefix}{env}.")


def check_production_brokers(given: str | None,
                             environ: Mapping[str, str] | None = None) -> None:
    """With ``is_production=True``, brokers must be set explicitly (the argument, the
    settings, or a variable), never the dev broker a ``stepstream dev`` file or the
    default address points to: a production app must not quietly talk to a dev broker.
    """
    if given or configured_brokers(os.environ if environ is None else environ):
        return
    raise ConfigError("sdk.Client(is_production=True) needs its brokers set explicitly: "
                      f"brokers=, settings with brokers, or one of {BROKER_VARIABLES}; "
                      "it does not fall back to the dev broker")
