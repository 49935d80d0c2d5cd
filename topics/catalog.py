"""The topic catalog: names, keys, partitions and configs of every stepstream topic."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from topics.settings import Settings


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its full name, partition count and broker configs."""

    name: str
    partitions: int
    config: dict[str, str]
    key: str
    holds: str


class Catalog:
    """Topic names and specs for one prefix."""

    def __init__(self, settings: Settings) -> None:
        p = settings.prefix
        n = settings.partitions
        max_bytes = str(settings.max_record_bytes + 64 * 1024)
        self.events = p + "events"
        self.runs = p + "runs"
        self.tasks = p + "tasks"
        self.functions = p + "functions"
        self.dlq = p + "dlq"
        self.waits = p + "waits"
        self.cancellations = p + "cancellations"
        self.engines = p + "engines"
        self.snapshots = p + "snapshots"
        self.history = p + "history"
        self.partitions = n
        delete = {"cleanup.policy": "delete", "max.message.bytes": max_bytes}
        self.specs: list[TopicSpec] = [
            TopicSpec(self.events, n, {**delete, "retention.ms": str(7 * 86_400_000)},
                      "event id", "user events, as sent"),
            # The run log is the source of truth: replay rebuilds every state table from it,
            # so it is kept for ever unless the operator decides otherwise.
            TopicSpec(self.runs, n, {**delete, "retention.ms": "-1"},
                      "run partition key", "the run log"),
            TopicSpec(self.tasks, n, {**delete, "retention.ms": str(86_400_000)},
                      "run id", "work for workers"),
            TopicSpec(self.functions, 1, {"cleanup.policy": "compact",
                                          "max.message.bytes": max_bytes},
                      "function id", "function registry"),
            # Waits and copies of every event, keyed by event name: a wait and the events
            # that may resolve it meet in order on one partition (docs/architecture.md).
            TopicSpec(self.waits, n, {**delete, "retention.ms": "-1"},
                      "event name", "waits for events, and the events they wait for"),
            TopicSpec(self.dlq, n, {**delete, "retention.ms": str(14 * 86_400_000)},
                      "original key", "records that could not be decoded or applied"),
            TopicSpec(self.cancellations, 1, {"cleanup.policy": "compact"},
                      "cancellation id", "bulk cancellations (POST /v1/cancellations)"),
            # Engine processes advertise their API URL and partitions here, so that any
            # engine can answer for any run (docs/architecture.md, "Any engine answers").
            # Delete as well as compact: an engine gone for a day is of no interest.
            TopicSpec(self.engines, 1, {"cleanup.policy": "compact,delete",
                                        "retention.ms": str(86_400_000)},
                      "engine API URL", "engine advertisements (peer table)"),
            # Bounded restore (docs/architecture.md, "Restore"): periodic snapshots of
            # each partition's live state, kept a few days (only the newest complete one
            # is read), and finished runs' final states, compacted: how long finished runs
            # stay queryable after a partition moves is how long this topic keeps them.
            TopicSpec(self.snapshots, n, {**delete, "retention.ms": str(7 * 86_400_000)},
                      "table/partition", "snapshots of each partition's live state"),
            TopicSpec(self.history, n, {"cleanup.policy": "compact",
                                        "max.message.bytes": max_bytes},
                      "state key", "finished runs' final states (restored in the background)"),
        ]

    def spec(self, name: str) -> TopicSpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise KeyError(name)


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition a key lives on.

    Every producer sets the partition explicitly with this function instead of relying
    on a client's default partitioner, so that the engine can tell which partition (and
    so which state table) holds a run without asking the broker.
    """
    if isinstance(key, str):
        key = key.encode()
    return zlib.crc32(key) % partitions


def event_partition(name: str, partitions: int) -> int:
    """The ``events`` partition of an event: by its name, not its id (the record's key
    stays the id). Every event of one name is then on one partition, in the order it was
    stored, and the router requests runs in that order: runs that share a flow-control
    key execute in the order their events were accepted (docs/architecture.md, "Flow
    control"). The matcher's copy on ``waits`` is keyed by name too."""
    return partition_for(name, partitions)
