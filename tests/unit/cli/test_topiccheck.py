"""`stepstream topics check`'s findings, from a described cluster (no broker)."""

from __future__ import annotations

from engine.cli.topiccheck import FoundTopic, check
from topics.catalog import Catalog
from topics.settings import Settings

SETTINGS = Settings(brokers="b:9092", prefix="s.", partitions=4, replication=1)
SPECS = Catalog(SETTINGS).specs


def healthy(replication: int = 1, **extra: str) -> dict[str, FoundTopic]:
    return {s.name: FoundTopic(s.partitions, replication, {**s.config, **extra})
            for s in SPECS}


def test_a_cluster_made_by_topics_create_has_only_the_dev_durability_warning() -> None:
    found = check(SPECS, healthy(), SETTINGS, prefix="s.")
    assert {f.severity for f in found} == {"warning"}
    assert {f.what for f in found} == {"replication factor"}
    assert check(SPECS, healthy(3, **{"min.insync.replicas": "2"}),
                 SETTINGS, prefix="s.") == []


def test_wrong_partitions_and_cleanup_policy_and_a_missing_topic_are_errors() -> None:
    found = healthy(3, **{"min.insync.replicas": "2"})
    runs = found["s.runs"]
    found["s.runs"] = FoundTopic(6, 3, {**runs.configs, "cleanup.policy": "compact"})
    del found["s.dlq"]
    by = {(f.topic, f.what): f for f in check(SPECS, found, SETTINGS, prefix="s.")}
    assert set(by) == {("s.runs", "partitions"), ("s.runs", "cleanup.policy"),
                       ("s.dlq", "missing")}
    assert all(f.severity == "error" for f in by.values())
    assert "STEPSTREAM_PARTITIONS=6" in by["s.runs", "partitions"].fix
    policy = by["s.runs", "cleanup.policy"]
    assert policy.fix == ("kafka-configs.sh --bootstrap-server b:9092 --alter --entity-type "
                          "topics --entity-name s.runs --add-config cleanup.policy=delete")
    assert policy.settable == ("cleanup.policy", "delete")
    assert by["s.dlq", "missing"].fix == "stepstream topics create"


def test_a_compacted_topic_left_at_the_default_policy_is_an_error() -> None:
    found = healthy(3, **{"min.insync.replicas": "2"})
    found["s.functions"] = FoundTopic(1, 3, {"min.insync.replicas": "2"})
    [f] = check(SPECS, found, SETTINGS, prefix="s.")
    assert (f.topic, f.what, f.found, f.wanted) == ("s.functions", "cleanup.policy",
                                                    "delete (default)", "compact")


def test_durability_needs_min_insync_with_three_replicas_and_enough_replicas() -> None:
    three = check(SPECS, healthy(3), SETTINGS, prefix="s.")
    assert {f.what for f in three} == {"min.insync.replicas"}
    assert all(f.settable == ("min.insync.replicas", "2") for f in three)
    wants_three = Settings(brokers="b", prefix="s.", partitions=4, replication=3)
    short = check(SPECS, healthy(1), wants_three, prefix="s.")
    assert {(f.what, f.severity) for f in short} == {("replication factor", "error")}


def test_retention_limits_history_an_error_on_runs_a_warning_on_events() -> None:
    found = healthy(3, **{"min.insync.replicas": "2"})
    for name in ("s.runs", "s.events"):
        found[name] = FoundTopic(found[name].partitions, 3,
                                 {**found[name].configs, "retention.ms": "3600000"})
    by = {f.topic: f for f in check(SPECS, found, SETTINGS, prefix="s.")}
    assert by["s.runs"].severity == "error" and by["s.runs"].wanted == "-1"
    assert by["s.events"].severity == "warning"


def test_a_smaller_max_message_bytes_is_an_error() -> None:
    found = healthy(3, **{"min.insync.replicas": "2"})
    found["s.tasks"] = FoundTopic(4, 3, {**found["s.tasks"].configs,
                                         "max.message.bytes": "1048576"})
    [f] = check(SPECS, found, SETTINGS, prefix="s.")
    assert (f.topic, f.what) == ("s.tasks", "max.message.bytes")


def test_the_same_finding_on_many_topics_is_printed_once() -> None:
    from engine.cli.topics import finding_lines

    lines = finding_lines(check(SPECS, healthy(), SETTINGS, prefix="s."))
    assert len(lines) == 2 and lines[0].startswith("warning: s.events, s.runs, ")
