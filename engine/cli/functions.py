"""``stepstream functions list|show|remove``: the function registry through the HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
from typing import Any

from engine.cli.brokers import DEFAULT_API
from engine.cli.client import CliError, api_call, api_url


def add_parser(sub: Any) -> None:
    """Add the ``functions`` command to the CLI's subparsers."""
    fns = sub.add_parser("functions", help="list, show or remove registered functions")
    fns_sub = fns.add_subparsers(dest="functions_command", required=True,
                                 metavar="list|show|remove")
    lst = fns_sub.add_parser("list", help="every registered function")
    lst.add_argument("--api", type=api_url, help=f"API base URL ({DEFAULT_API})")
    show = fns_sub.add_parser("show", help="one function's definition, and per flow-control "
                                           "key its running and queued runs")
    show.add_argument("fn_id", metavar="FN_ID", help="function id, app_id-fn_id")
    show.add_argument("--json", action="store_true",
                      help="print the API's JSON (GET /v1/functions/FN_ID) instead")
    show.add_argument("--api", type=api_url, help=f"API base URL ({DEFAULT_API})")
    rm = fns_sub.add_parser("remove", help="remove a function: its cron stops and no new "
                                           "event starts it; runs in flight go on")
    rm.add_argument("fn_id", metavar="FN_ID", help="function id, app_id-fn_id")
    rm.add_argument("--api", type=api_url, help=f"API base URL ({DEFAULT_API})")


def _call(base: str, path: str, method: str | None = None) -> Any:
    try:
        return api_call(base, path, method=method)
    except CliError as exc:
        # api_call raises from None, which keeps the HTTP error as the context: an
        # unknown function id is a bad argument (exit 2), like any other.
        context = exc.__context__
        if isinstance(context, urllib.error.HTTPError) and context.code == 404:
            exc.code = 2
        raise


def cmd_functions(args: argparse.Namespace, base: str) -> int:
    """``stepstream functions list|show|remove`` against the API at ``base``."""
    from rich.console import Console

    from engine.api.function_views import function_text, functions_table

    console = Console() if sys.stdout.isatty() else Console(width=200)
    if args.functions_command == "list":
        body = _call(base, "/v1/functions")
        if not body.get("data"):
            console.print("no functions are registered")
        else:
            console.print(functions_table(body["data"]))
        return 0
    path = "/v1/functions/" + urllib.parse.quote(args.fn_id, safe="")
    if args.functions_command == "show":
        view = _call(base, path)["data"]
        if args.json:
            print(json.dumps(view, indent=2, sort_keys=True))
        else:
            console.print(function_text(view))
        return 0
    _call(base, path, method="DELETE")
    print(f"function {args.fn_id} removed: its cron stops and no new event starts it; "
          f"runs in flight keep their state")
    return 0
