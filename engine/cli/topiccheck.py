"""What ``stepstream topics check`` finds wrong with a cluster's topics. Pure: the
catalog and what the broker described in, findings (with the command that fixes each)
out; :mod:`engine.cli.provision` does the reading and the fixing."""

from __future__ import annotations

from dataclasses import dataclass, field

from topics.catalog import TopicSpec
from topics.settings import Settings

# Below this replication factor a broker's loss can lose acknowledged records.
DURABLE_REPLICATION = 3
DURABLE_MIN_INSYNC = 2
# Topics whose whole history replay and restore read: a finite retention loses runs.
KEEP_FOREVER = ("runs", "waits")


@dataclass(frozen=True, slots=True)
class FoundTopic:
    """A topic as the broker describes it. ``configs`` holds what the broker reported;
    a config it did not report is absent (the broker's default applies)."""

    partitions: int
    replication: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong (``severity`` "error") or worth a look ("warning") on a topic."""

    topic: str
    severity: str
    what: str
    found: str
    wanted: str
    fix: str
    # A config the tool can set itself (``topics create --fix``): (name, value).
    settable: tuple[str, str] | None = None


def _configs_command(brokers: str, topic: str, name: str, value: str) -> str:
    return (f"kafka-configs.sh --bootstrap-server {brokers} --alter --entity-type topics "
            f"--entity-name {topic} --add-config {name}={value}")


def check(specs: list[TopicSpec], found: dict[str, FoundTopic], settings: Settings,
          *, prefix: str) -> list[Finding]:
    """Every finding for the catalog's ``specs`` against the ``found`` topics."""
    brokers = settings.brokers or "BROKERS"
    out: list[Finding] = []
    for spec in specs:
        short = spec.name[len(prefix):] if spec.name.startswith(prefix) else spec.name
        topic = found.get(spec.name)
        if topic is None:
            out.append(Finding(spec.name, "error", "missing", "-", "exists",
                               "stepstream topics create"))
            continue
        out += _partitions(spec, topic)
        out += _durability(spec, topic, settings, brokers)
        out += _configs(spec, topic, short, brokers)
    return out


def _partitions(spec: TopicSpec, topic: FoundTopic) -> list[Finding]:
    if topic.partitions == spec.partitions:
        return []
    return [Finding(spec.name, "error", "partitions", str(topic.partitions),
                    str(spec.partitions),
                    "partition counts are fixed for a topic's life (keys would move): set "
                    f"STEPSTREAM_PARTITIONS={topic.partitions} to match, or use a new "
                    "STEPSTREAM_PREFIX and `stepstream topics create`")]


def _durability(spec: TopicSpec, topic: FoundTopic, settings: Settings, brokers: str
                ) -> list[Finding]:
    out = []
    if topic.replication < settings.replication:
        out.append(Finding(spec.name, "error", "replication factor", str(topic.replication),
                           f">= {settings.replication} (STEPSTREAM_REPLICATION)",
                           "raise it with kafka-reassign-partitions.sh, or recreate the "
                           "topic under a new STEPSTREAM_PREFIX"))
    elif topic.replication < DURABLE_REPLICATION:
        out.append(Finding(spec.name, "warning", "replication factor", str(topic.replication),
                           f">= {DURABLE_REPLICATION} for durability",
                           "fine for a dev broker; on a cluster, a broker's loss loses "
                           "acknowledged records: set STEPSTREAM_REPLICATION=3 before "
                           "`stepstream topics create`"))
    if topic.replication >= DURABLE_REPLICATION:
        raw = topic.configs.get("min.insync.replicas")
        value = int(raw) if raw is not None and raw.isdigit() else None
        if value is None or value < DURABLE_MIN_INSYNC:
            out.append(Finding(spec.name, "error", "min.insync.replicas",
                               raw if raw is not None else "not reported (broker default)",
                               f">= {DURABLE_MIN_INSYNC}",
                               _configs_command(brokers, spec.name, "min.insync.replicas",
                                                str(DURABLE_MIN_INSYNC)),
                               ("min.insync.replicas", str(DURABLE_MIN_INSYNC))))
    return out


def _configs(spec: TopicSpec, topic: FoundTopic, short: str, brokers: str) -> list[Finding]:
    out = []
    for name, wanted in spec.config.items():
        have = topic.configs.get(name)
        if name == "cleanup.policy":
            effective = have if have is not None else "delete"  # Kafka's default
            if set(effective.split(",")) != set(wanted.split(",")):
                out.append(Finding(spec.name, "error", name, have or "delete (default)",
                                   wanted, _configs_command(brokers, spec.name, name, wanted),
                                   (name, wanted)))
        elif name == "retention.ms":
            if have is None or have == wanted:
                continue
            # Replay and restore read all of runs and waits: any limit there loses history.
            severity = "error" if short in KEEP_FOREVER else "warning"
            out.append(Finding(spec.name, severity, name, have, wanted,
                               _configs_command(brokers, spec.name, name, wanted),
                               (name, wanted)))
        elif name == "max.message.bytes":
            if have is None or not have.isdigit() or int(have) >= int(wanted):
                continue
            out.append(Finding(spec.name, "error", name, have, f">= {wanted}",
                               _configs_command(brokers, spec.name, name, wanted),
                               (name, wanted)))
    return out
