"""Configuration shared by the engine and the SDK.

Values come from a mapping (normally ``os.environ``) passed in by the caller, so this
module stays free of I/O. Every field has a default that works with the dev broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that both sides of the wire must agree on, plus client tuning."""

    brokers: str | None = None
    prefix: str = "stepstream."
    partitions: int = 8
    replication: int = 1
    max_event_bytes: int = 512 * KIB
    # Inngest's limits: 4 MB per step output, 32 MB per run (events + outputs). A run's
    # task carries large outputs by reference, so neither is bounded by the record size.
    max_step_output_bytes: int = 4 * MIB
    max_run_state_bytes: int = 32 * MIB
    max_record_bytes: int = 8 * MIB
    max_depth: int = 64
    # Above 0: the engine's and workers' producers log what they sent (records, produce
    # requests) at this interval and when they close (topics/producer_stats.py).
    producer_stats_ms: int = 0
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    # Tansu answers a fetch only when fetch.wait.max.ms has passed, so this bounds the
    # latency of every hop on the dev broker. Real Kafka wakes fetches on new data, so a
    # larger value there only saves idle requests.
    fetch_wait_max_ms: int = 10
    linger_ms: int = 1
    # First retry waits about this long; each further retry doubles it (with jitter).
    retry_backoff_base_ms: int = 1000
    # RocksDB memory of one engine process, shared by all its partition databases:
    # memtables are flushed to disk past the first, the second caches read blocks.
    state_memtable_mb: int = 64
    state_block_cache_mb: int = 16
    # A worker runs ahead past completed steps without waiting for the engine; it hands
    # the run back after this many steps or this long in one pass (1 step: every step
    # makes a round trip through the engine, as before run-ahead).
    pass_max_steps: int = 100
    pass_max_ms: int = 10_000
    # Which runs' stepstream/function.* events go to the `events` topic: "listened"
    # (only those a registered trigger names; the rest reach only waits and cancel rules,
    # on `waits`) or "all" (every run's, as before; for consumers of `events`).
    lifecycle_events: str = "listened"
    # Several engine processes: the URL peers reach this engine's API at (default: the
    # address it is bound to), how long an engine waits for its peers' answers, and how
    # often it advertises itself (docs/architecture.md, "Any engine answers").
    advertised_url: str | None = None
    peer_timeout_ms: int = 2000
    peer_heartbeat_ms: int = 2000

    @staticmethod
    def from_env(env: Mapping[str, str], **overrides: Any) -> Settings:
        """Read ``STEPSTREAM_*`` variables; ``overrides`` win over the environment."""
        values: dict[str, Any] = {}
        for f in fields(Settings):
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
        for name in ("partitions", "replication", "max_event_bytes", "max_record_bytes",
                     "max_depth", "max_step_output_bytes", "max_run_state_bytes",
                     "state_memtable_mb", "state_block_cache_mb", "pass_max_steps",
                     "pass_max_ms", "peer_timeout_ms", "peer_heartbeat_ms"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
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
