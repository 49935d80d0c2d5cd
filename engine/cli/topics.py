"""``stepstream topics check|create``: the cluster's topics against what stepstream
needs (:mod:`engine.cli.topiccheck`), and provisioning them."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from engine.cli.client import CliError
from engine.cli.provision import ProvisionError, describe, ensure_topics, set_configs
from engine.cli.topiccheck import Finding, check
from topics.catalog import Catalog
from topics.settings import Settings


def add_parser(sub: Any) -> None:
    """Add the ``topics`` command to the CLI's subparsers."""
    top = sub.add_parser("topics", help="check or create stepstream's topics on the cluster")
    top_sub = top.add_subparsers(dest="topics_command", required=True, metavar="check|create")
    chk = top_sub.add_parser("check", help="compare the topics with what stepstream needs: "
                                           "partitions, replication, min.insync.replicas, "
                                           "cleanup policy, retention")
    chk.add_argument("--json", action="store_true", help="print the findings as JSON")
    create = top_sub.add_parser("create", help="create the missing topics (idempotent)")
    create.add_argument("--fix", action="store_true",
                        help="also set the configs `topics check` reports as wrong")


def findings(settings: Settings) -> list[Finding]:
    """What is wrong with the configured cluster's topics (raises ProvisionError)."""
    catalog = Catalog(settings)
    found = describe(settings, [s.name for s in catalog.specs])
    return check(catalog.specs, found, settings, prefix=settings.prefix)


def finding_lines(found: list[Finding]) -> list[str]:
    """Two lines per finding: what, then how to fix it. The same finding on several
    topics with the same fix (a dev broker's one replica) is one finding."""
    groups: dict[tuple[str, str, str, str, str], list[str]] = {}
    for f in found:
        groups.setdefault((f.severity, f.what, f.found, f.wanted, f.fix), []).append(f.topic)
    lines = []
    for (severity, what, have, wanted, fix), names in groups.items():
        lines.append(f"{severity}: {', '.join(names)}: {what} is {have}, wanted {wanted}")
        lines.append(f"  fix: {fix}")
    return lines


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    """``stepstream topics check|create``; exit status 1 when errors remain."""
    if not settings.brokers:
        raise CliError("no brokers configured: set STEPSTREAM_BROKERS (or "
                       "KAFKA_BOOTSTRAP_SERVERS), or run it beside `stepstream dev`", 2)
    try:
        if args.topics_command == "create":
            created = ensure_topics(settings)
            print(f"created: {', '.join(created)}" if created else
                  "all topics exist already")
            if args.fix:
                changes: dict[str, dict[str, str]] = {}
                for f in findings(settings):
                    if f.settable is not None:
                        changes.setdefault(f.topic, {})[f.settable[0]] = f.settable[1]
                set_configs(settings, changes)
                for topic, configs in changes.items():
                    print(f"set on {topic}: " + ", ".join(f"{k}={v}"
                                                         for k, v in configs.items()))
        found = findings(settings)
    except ProvisionError as exc:
        raise CliError(str(exc), 1) from None
    if getattr(args, "json", False):
        print(json.dumps([asdict(f) for f in found], indent=2))
    else:
        for line in finding_lines(found):
            print(line)
        errors = sum(f.severity == "error" for f in found)
        print(f"{len(Catalog(settings).specs)} topics checked on {settings.brokers}: "
              f"{errors} error(s), {len(found) - errors} warning(s)")
    return 1 if any(f.severity == "error" for f in found) else 0
