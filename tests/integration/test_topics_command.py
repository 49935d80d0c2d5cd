"""`stepstream topics check|create` against the real dev broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.harness import ROOT

pytestmark = pytest.mark.kafka


def topics(broker: str, prefix: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTREAM_")}
    env.update(STEPSTREAM_BROKERS=broker, STEPSTREAM_PREFIX=prefix, STEPSTREAM_PARTITIONS="4",
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "engine", "topics", *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def make_topic(broker: str, name: str, partitions: int, config: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": broker})
    for fut in admin.create_topics([NewTopic(name, partitions, 1, config=config)]).values():
        fut.result(30)


def test_check_finds_a_topic_with_the_wrong_partition_count_and_cleanup_policy(
        broker: str) -> None:
    prefix = f"tc{uuid.uuid4().hex[:8]}."
    make_topic(broker, prefix + "runs", 3, {"cleanup.policy": "compact"})
    checked = topics(broker, prefix, "check")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    out = checked.stdout
    assert f"error: {prefix}runs: partitions is 3, wanted 4" in out
    assert f"error: {prefix}runs: cleanup.policy is compact, wanted delete" in out
    assert f"--entity-name {prefix}runs --add-config cleanup.policy=delete" in out
    [missing] = [line for line in out.splitlines() if ": missing is" in line]
    assert missing.startswith("error: ") and f"{prefix}events," in missing
    # Partition counts cannot be changed in place: create refuses, with the way out.
    created = topics(broker, prefix, "create")
    assert created.returncode == 1 and "STEPSTREAM_PARTITIONS=3" in created.stderr


def test_create_makes_the_missing_topics_and_fix_sets_the_wrong_configs(broker: str) -> None:
    prefix = f"tc{uuid.uuid4().hex[:8]}."
    make_topic(broker, prefix + "dlq", 4, {"cleanup.policy": "compact"})
    created = topics(broker, prefix, "create", "--fix")
    assert created.returncode == 0, created.stdout + created.stderr
    assert f"set on {prefix}dlq: cleanup.policy=delete" in created.stdout
    again = topics(broker, prefix, "create")
    assert again.returncode == 0 and "all topics exist already" in again.stdout
    checked = topics(broker, prefix, "check")
    # The dev broker keeps one replica: warnings, no errors.
    assert checked.returncode == 0, checked.stdout
    assert "0 error(s)" in checked.stdout and "warning: " in checked.stdout
    assert "error:" not in checked.stdout
