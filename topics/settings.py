"""Configuration shared by the engine and the SDK.

Values come from a mapping (normally ``os.environ``) passed in by the caller, so this
module stays free of I/O. Every field has a default that works with the dev broker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import PurePath
from typing import Any

DEV_BROKER_ADDRESS = "127.0.0.1:9092"
# `stepstream dev` writes the address of the broker it started here (relative to the
# folder it runs in) and the same in the user's home folder, so that clients started
# anywhere find it without configuration (see dev_file_candidates).
DEV_DIR = ".stepstream"
DEV_BROKER_FILE = DEV_DIR + "/dev-broker"
# The HTTP API's base URL, beside the broker's address: `stepstream runs` reads it.
DEV_API_FILE = DEV_DIR + "/dev-api"


def dev_file_candidates(name: str, cwd: PurePath, env: Mapping[str, str]) -> list[PurePath]:
    """Where to look for a file ``stepstream dev`` wrote (``name`` relative to the folder
    it ran in, like :data:`DEV_BROKER_FILE`), first match wins: ``cwd``, each of its
    parents, then the per-user copy under ``$HOME``.

    A client started in a sub-folder of the project, or anywhere else on the machine,
    then finds the dev broker that is running: the nearest project's first, else the
    most recently started one.
    """
    candidates = [folder / name for folder in (cwd, *cwd.parents)]
    home = env.get("HOME")
    if home:
        mine = PurePath(home) / name
        if mine not in candidates:
            candidates.append(mine)
    return candidates


def dev_file_trusted(file_uid: int, file_mode: int, folder_uid: int, folder_mode: int,
                     my_uid: int) -> bool:
    """Whether a file ``stepstream dev`` wrote may be believed (from its and its folder's
    ``os.stat``): both owned by this user and writable by no one else. The search looks in
    every parent folder, ``/tmp`` included, so another local user could otherwise plant an
    address there and receive this user's API key, events or step outputs."""
    others_write = 0o022
    return (file_uid == my_uid and folder_uid == my_uid
            and not file_mode & others_write and not folder_mode & others_write)


KIB = 1024
MIB = 1024 * KIB
# Room kept in a record for what surrounds one user value (kind, ids, step names).
RECORD_ENVELOPE_BYTES = 64 * KIB
LIFECYCLE_EVENT_MODES = ("listened", "all")


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


# librdkafka settings pass through from STEPSTREAM_KAFKA_<NAME> (NAME upper-cased, dots
# as underscores: STEPSTREAM_KAFKA_SASL_MECHANISM -> sasl.mechanism) and from a Java-style
# properties file named by STEPSTREAM_KAFKA_CONFIG (exact names; the variables win).
KAFKA_ENV_PREFIX = "STEPSTREAM_KAFKA_"
KAFKA_CONFIG_FILE_ENV = "STEPSTREAM_KAFKA_CONFIG"
# What stepstream sets on its clients itself: its guarantees rest on them.
RESERVED_KAFKA = frozenset({
    "bootstrap.servers", "metadata.broker.list", "group.id", "group.instance.id",
    "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset",
    "enable.idempotence", "acks", "request.required.acks", "transactional.id",
    "isolation.level", "partition.assignment.strategy", "enable.partition.eof",
    "logger", "error_cb", "stats_cb", "on_delivery", "on_commit", "throttle_cb",
})
# A setting whose name holds one of these is shown as *** (sasl.password,
# ssl.key.password, sasl.oauthbearer.client.secret, sasl.jaas.config, ...).
SECRET_PARTS = ("password", "secret", "key", "token", "credential", "jaas")
_KAFKA_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def parse_properties(text: str) -> list[tuple[str, str]]:
    """``name=value`` (or ``name: value``) lines of a properties file; ``#`` and ``!``
    start comments. Raises :class:`SettingsError` naming a malformed line."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#!":
            continue
        cut = min((i for i in (stripped.find("="), stripped.find(":")) if i > 0),
                  default=-1)
        if cut < 0:
            raise SettingsError(f"{KAFKA_CONFIG_FILE_ENV} line {number}: expected "
                                f"name=value, got {stripped[:80]!r}")
        out.append((stripped[:cut].strip(), stripped[cut + 1:].strip()))
    return out


def kafka_passthrough(env: Mapping[str, str], file_text: str | None = None
                      ) -> tuple[tuple[str, str], ...]:
    """The librdkafka settings to pass through, sorted by name: from the properties
    ``file_text`` (the file ``STEPSTREAM_KAFKA_CONFIG`` names, read by the caller), then
    ``STEPSTREAM_KAFKA_*`` variables. Raises :class:`SettingsError` for a malformed name
    or one stepstream sets itself."""
    found: dict[str, tuple[str, str]] = {}
    if file_text is not None:
        for name, value in parse_properties(file_text):
            found[name] = (value, f"{name} in {KAFKA_CONFIG_FILE_ENV}")
    for var, value in env.items():
        # Empty means unset, as for every STEPSTREAM_* variable.
        if var.startswith(KAFKA_ENV_PREFIX) and var != KAFKA_CONFIG_FILE_ENV and value:
            found[var[len(KAFKA_ENV_PREFIX):].lower().replace("_", ".")] = (value, var)
    for name, (_value, source) in found.items():
        if not _KAFKA_NAME.match(name):
            raise SettingsError(f"{source}: {name!r} is not a librdkafka setting name")
        if name in RESERVED_KAFKA:
            raise SettingsError(f"{source}: stepstream sets {name} itself (its guarantees "
                                f"depend on it); use the STEPSTREAM_* setting if there is one")
    return tuple(sorted((name, value) for name, (value, _source) in found.items()))


def read_kafka_file(env: Mapping[str, str], read_text: Callable[[str], str]) -> str | None:
    """The text of the file ``STEPSTREAM_KAFKA_CONFIG`` names (None if unset), read with
    the caller's ``read_text``; raises :class:`SettingsError` if it cannot be read."""
    path = env.get(KAFKA_CONFIG_FILE_ENV)
    if not path:
        return None
    try:
        return read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise SettingsError(f"{KAFKA_CONFIG_FILE_ENV}={path}: cannot read it ({reason})"
                            ) from None


def kafka_problem(settings: Settings, make_client: Callable[[dict[str, Any]], Any]
                  ) -> str | None:
    """What librdkafka says is wrong with the passed-through settings, or None: it
    builds a client (``make_client``, the caller's, with no brokers) from them alone,
    so a misspelt name or a bad value is one line at start, not a traceback later."""
    if not settings.kafka:
        return None
    try:
        make_client(dict(settings.kafka))
    except Exception as exc:  # KafkaException; this module does not import the client
        err = exc.args[0] if exc.args else exc
        text = err.str() if hasattr(err, "str") else str(err)
        return (f"a librdkafka setting passed through (STEPSTREAM_KAFKA_* or "
                f"{KAFKA_CONFIG_FILE_ENV}) is refused: {text}")
    return None


def settings_from(env: Mapping[str, str], *, brokers: str | None,
                  read_text: Callable[[str], str],
                  trial_client: Callable[[dict[str, Any]], Any]) -> Settings:
    """``Settings.from_env`` as every process loads it: the librdkafka properties file
    read with the caller's ``read_text``, and the passed-through settings judged by
    librdkafka (``trial_client``, see :func:`kafka_problem`). Raises
    :class:`SettingsError`."""
    settings = Settings.from_env(env, brokers=brokers,
                                 kafka_file_text=read_kafka_file(env, read_text))
    problem = kafka_problem(settings, trial_client)
    if problem:
        raise SettingsError(problem)
    return settings


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every secret's value shown as ``***``: for logs and messages."""
    return {k: "***" if any(p in k for p in SECRET_PARTS) else v for k, v in config.items()}


def at_least(low: int, default: int, *, zero: str | None = None) -> Any:
    """A whole-number setting's field with its lower bound (:meth:`Settings.validate`);
    ``zero`` says what 0 means where it is allowed. Integer settings without one must
    be 0 or more."""
    return field(default=default, metadata={"min": low, "zero": zero})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that both sides of the wire must agree on, plus client tuning."""

    brokers: str | None = None
    prefix: str = "stepstream."
    partitions: int = at_least(1, 8)
    replication: int = at_least(1, 1)
    max_event_bytes: int = at_least(1, 512 * KIB)
    # Inngest's limits: 4 MB per step output, 32 MB per run (events + outputs). A run's
    # task carries large outputs by reference, so neither is bounded by the record size.
    max_step_output_bytes: int = at_least(1, 4 * MIB)
    max_run_state_bytes: int = at_least(1, 32 * MIB)
    max_record_bytes: int = at_least(1, 8 * MIB)
    max_depth: int = at_least(1, 64)
    # Above 0: the engine's and workers' producers log what they sent (records, produce
    # requests) at this interval and when they close (topics/producer_stats.py).
    producer_stats_ms: int = at_least(0, 0, zero="off")
    session_timeout_ms: int = at_least(1, 6000)
    heartbeat_interval_ms: int = at_least(1, 1000)
    # Tansu answers a fetch only when fetch.wait.max.ms has passed, so this bounds the
    # latency of every hop on the dev broker. Real Kafka wakes fetches on new data, so a
    # larger value there only saves idle requests.
    fetch_wait_max_ms: int = 10
    linger_ms: int = 1
    # First retry waits about this long; each further retry doubles it (with jitter).
    retry_backoff_base_ms: int = 1000
    # RocksDB memory of one engine process, shared by all its partition databases:
    # memtables are flushed to disk past the first, the second caches read blocks.
    state_memtable_mb: int = at_least(1, 64)
    state_block_cache_mb: int = at_least(1, 16)
    # A worker runs ahead past completed steps without waiting for the engine; it hands
    # the run back after this many steps or this long in one pass (1 step: every step
    # makes a round trip through the engine, as before run-ahead).
    pass_max_steps: int = at_least(1, 100)
    pass_max_ms: int = at_least(1, 10_000)
    # Which runs' stepstream/function.* events go to the `events` topic: "listened"
    # (only those a registered trigger names; the rest reach only waits and cancel rules,
    # on `waits`) or "all" (every run's, as before; for consumers of `events`).
    lifecycle_events: str = "listened"
    # librdkafka settings passed through to every client (kafka_passthrough); never
    # printed whole, they may hold secrets (redact).
    kafka: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Several engine processes: the URL peers reach this engine's API at (default: the
    # address it is bound to), how long an engine waits for its peers' answers, and how
    # often it advertises itself (docs/architecture.md, "Any engine answers").
    advertised_url: str | None = None
    peer_timeout_ms: int = at_least(1, 2000)
    peer_heartbeat_ms: int = at_least(1, 2000)
    # How often the engine writes each partition's live state to ``snapshots``, so a
    # moved partition restores from there, not from all of ``runs`` (0: never; restore
    # then re-folds from offset 0). docs/architecture.md, "Restore".
    snapshot_interval_ms: int = at_least(0, 60_000, zero="off")
    # Threads the engine's API runs queries, page building and topic reads on. Each
    # busy one is a GIL contender the API's event loop waits behind (README, config).
    api_threads: int = at_least(1, 1)

    @staticmethod
    def from_env(env: Mapping[str, str], *, kafka_file_text: str | None = None,
                 **overrides: Any) -> Settings:
        """Read ``STEPSTREAM_*`` variables; ``overrides`` win over the environment.
        ``kafka_file_text`` is the text of the file ``STEPSTREAM_KAFKA_CONFIG`` names:
        this module does no I/O, so the caller reads it (:func:`read_kafka_file`)."""
        values: dict[str, Any] = {}
        if env.get(KAFKA_CONFIG_FILE_ENV) and kafka_file_text is None:
            raise SettingsError(f"{KAFKA_CONFIG_FILE_ENV} is set but its file was not read "
                                f"(load the settings with stepstream's loader)")
        values["kafka"] = kafka_passthrough(env, kafka_file_text)
        for f in fields(Settings):
            if f.name == "kafka":
                continue
            raw = env.get("STEPSTREAM_" + f.name.upper())
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise SettingsError(
                        f"STEPSTREAM_{f.name.upper()} must be an integer, got {raw!r}"
                    ) from None
            else:
                values[f.name] = raw
        if "brokers" not in values and env.get("KAFKA_BOOTSTRAP_SERVERS"):
            values["brokers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = Settings(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for f in fields(self):
            if f.type not in ("int", int):
                continue
            value, low, zero = getattr(self, f.name), f.metadata.get("min", 0), \
                f.metadata.get("zero")
            if value >= low:
                continue
            if low == 0:
                raise SettingsError(f"{f.name} must be 0{f' ({zero})' if zero else ''} "
                                    f"or more, got {value}")
            raise SettingsError(f"{f.name} must be at least {low}, got {value}")
        if self.lifecycle_events not in LIFECYCLE_EVENT_MODES:
            raise SettingsError(f"lifecycle_events must be one of {LIFECYCLE_EVENT_MODES}, "
                                f"got {self.lifecycle_events!r}")
        if self.advertised_url is not None and not self.advertised_url.startswith(
                ("http://", "https://")):
            raise SettingsError(f"advertised_url must be an http:// or https:// URL, got "
                                f"{self.advertised_url!r}")
        if self.max_event_bytes > self.max_record_bytes:
            raise SettingsError("max_event_bytes cannot exceed max_record_bytes")
        if self.max_step_output_bytes > self.max_record_bytes - RECORD_ENVELOPE_BYTES:
            # A worker reports an output inside one record, with its ids around it.
            raise SettingsError(
                f"max_step_output_bytes ({self.max_step_output_bytes}) must leave "
                f"{RECORD_ENVELOPE_BYTES} bytes of max_record_bytes ({self.max_record_bytes}) "
                "for the record around it")

    def with_brokers(self, brokers: str) -> Settings:
        return replace(self, brokers=brokers)

    def client_config(self, ours: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A librdkafka client's settings: the brokers, the passed-through settings,
        then ``ours`` (stepstream's own for that client, which win)."""
        return {"bootstrap.servers": self.brokers, **dict(self.kafka), **(ours or {})}

    def consumer_tuning(self) -> dict[str, Any]:
        """librdkafka settings every stepstream consumer uses."""
        return {
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            "fetch.wait.max.ms": self.fetch_wait_max_ms,
            "fetch.message.max.bytes": self.max_record_bytes,
            # cooperative-sticky lost partitions on Tansu; eager range is correct everywhere.
            "partition.assignment.strategy": "range",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "socket.nagle.disable": True,
        }

    def producer_tuning(self) -> dict[str, Any]:
        """librdkafka settings every stepstream producer uses: durable and idempotent."""
        return {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": self.linger_ms,
            "message.max.bytes": self.max_record_bytes + 64 * KIB,
            "compression.type": "none",
            # Every request here is small and latency-bound: do not hold one back until the
            # previous one's TCP ACK (librdkafka leaves Nagle on by default).
            "socket.nagle.disable": True,
        }
