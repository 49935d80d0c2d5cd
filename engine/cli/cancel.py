"""``stepstream runs cancel``: one run by id, or every queued and running run a filter
matches (``POST /v1/cancellations``)."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from engine.cli.client import CliError, api_call


def add_arguments(cancel: argparse.ArgumentParser, *, time_ms: Any, reason: Any) -> None:
    """The ``runs cancel`` arguments (``time_ms`` and ``reason`` are the CLI's parsers)."""
    cancel.add_argument("run_id", nargs="?", help="the run to cancel; or give filters")
    cancel.add_argument("--reason", type=reason, help="why (kept with the run)")
    cancel.add_argument("--function", metavar="FN_ID",
                        help="bulk: the queued and running runs of this function id")
    cancel.add_argument("--app", metavar="APP_ID", help="bulk: only runs of this app")
    cancel.add_argument("--since", type=time_ms, metavar="TIME",
                        help="bulk: only runs requested at or after TIME")
    cancel.add_argument("--until", type=time_ms, metavar="TIME",
                        help="bulk: only runs requested before TIME (default: now)")
    cancel.add_argument("--if", dest="if_exp", metavar="CEL",
                        help="bulk: only runs whose trigger passes this CEL expression, "
                             "e.g. 'event.data.plan == \"free\"'")
    cancel.add_argument("--all", action="store_true",
                        help="bulk with no filter: every queued and running run")
    cancel.add_argument("--dry-run", action="store_true",
                        help="bulk: count the runs that match, cancel nothing")


def run(args: argparse.Namespace, base: str) -> int:
    """Cancel one run or a filtered set; returns the exit status."""
    filters = {"function_id": args.function, "app_id": args.app,
               "started_after": args.since, "started_before": args.until,
               "if": args.if_exp}
    given = {k: v for k, v in filters.items() if v is not None}
    if args.run_id is not None:
        if given or args.all or args.dry_run:
            raise CliError("give a RUN_ID or bulk filters (--function, --app, --since, "
                           "--until, --if, --all), not both", 2)
        path = "/v1/runs/" + urllib.parse.quote(args.run_id, safe="") + "/cancel"
        body = api_call(base, path, {"reason": args.reason} if args.reason else {})
        print(f"run {body.get('run_id', args.run_id)}: {body.get('status', 'cancelling')}")
        return 0
    if not given and not args.all:
        raise CliError("give a RUN_ID, or filters for a bulk cancel (--function, --app, "
                       "--since, --until, --if); --all cancels every queued and running "
                       "run", 2)
    request: dict[str, Any] = {**given, "all": args.all}
    if args.reason:
        request["reason"] = args.reason
    dry = api_call(base, "/v1/cancellations", {**request, "dry_run": True})
    print(f"{dry['matched']}{'+' if dry.get('more') else ''} runs match")
    if args.dry_run or not dry["matched"]:
        return 0
    done = api_call(base, "/v1/cancellations", request)
    more = " (more match: run it again for the next ones)" if done.get("more") else ""
    print(f"cancelling {done['matched']} runs: cancellation {done['id']}{more}")
    return 0
