"""``stepstream runs rerun``: re-run one run, or every run matching a filter, through
the HTTP API (``POST /v1/runs/{id}/rerun``, ``POST /v1/reruns``).

Bulk: the matches are counted first (``POST /v1/reruns`` with ``dry_run``) and printed,
then each is re-run with its own request, so the progress shown is real: a rich
progress bar on a terminal, one plain line per run otherwise; a summary ends it.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.cli.brokers import DEFAULT_API
from engine.cli.client import CliError, api_call, api_url

# Re-run requests in flight at once (each waits for the broker's acknowledgement).
PARALLEL = 8


def add_parser(runs_sub: Any, run_status: Callable[[str], str],
               time_ms: Callable[[str], int]) -> None:
    """Add ``rerun`` to the ``runs`` command's subparsers (argument types shared with
    ``runs list``)."""
    rerun = runs_sub.add_parser(
        "rerun", help="re-run a run (same function, same events), or every run matching "
                      "--function/--status/--since/--until")
    rerun.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run to re-run")
    rerun.add_argument("--from-step", metavar="STEP_ID",
                       help="keep the outputs of the steps completed before STEP_ID; run "
                            "it and the rest again (one run only)")
    rerun.add_argument("--function", metavar="FN_ID", help="bulk: runs of this function id")
    rerun.add_argument("--status", type=run_status, action="append", metavar="STATUS",
                       help="bulk: runs in this status (repeat for several)")
    rerun.add_argument("--since", type=time_ms, metavar="TIME",
                       help="bulk: runs requested at or after TIME (epoch ms or ISO-8601)")
    rerun.add_argument("--until", type=time_ms, metavar="TIME",
                       help="bulk: runs requested before TIME (epoch ms or ISO-8601)")
    rerun.add_argument("--dry-run", action="store_true",
                       help="bulk: list the matching runs, re-run none")
    rerun.add_argument("--all", action="store_true",
                       help="bulk: allow no filter at all (every run)")
    rerun.add_argument("--api", type=api_url, help=f"API base URL ({DEFAULT_API})")


def _bulk_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.function is not None:
        body["function_id"] = args.function
    if args.status:
        body["status"] = list(dict.fromkeys(args.status))
    if args.since is not None:
        body["started_after"] = args.since
    if args.until is not None:
        body["started_before"] = args.until
    if args.all:
        body["all"] = True
    return body


def _check(args: argparse.Namespace) -> None:
    """Argument combinations argparse cannot express; a bad one is exit code 2."""
    bulk = [f"--{n.replace('_', '-')}" for n in ("function", "status", "since", "until",
                                                  "dry_run", "all")
            if getattr(args, n) not in (None, False, [])]
    if args.run_id is not None:
        if bulk:
            raise CliError(f"give a RUN_ID or bulk filters ({', '.join(bulk)}), not both", 2)
        if args.from_step is not None and not args.from_step:
            raise CliError("--from-step needs a step id", 2)
        return
    if args.from_step is not None:
        raise CliError("--from-step re-runs one run: give its RUN_ID", 2)
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise CliError(f"--since ({args.since}) must be before --until ({args.until})", 2)
    if not any(b for b in bulk if b not in ("--dry-run", "--all")) and not args.all:
        raise CliError("give a RUN_ID, or a filter (--function, --status, --since, "
                       "--until) to re-run in bulk, or --all to re-run every run", 2)


def _rerun_path(run_id: str) -> str:
    return "/v1/runs/" + urllib.parse.quote(run_id, safe="") + "/rerun"


def _rerun_one(base: str, args: argparse.Namespace) -> int:
    body = {"from_step": args.from_step} if args.from_step is not None else {}
    try:
        answer = api_call(base, _rerun_path(args.run_id), body)
    except CliError as exc:
        # An unknown run (404) or step (400) is a bad argument; a removed function
        # (409) is not. api_call raises from None, keeping the HTTP error as context.
        context = exc.__context__
        if isinstance(context, urllib.error.HTTPError) and context.code in (400, 404):
            exc.code = 2
        raise
    print(answer["run_id"])
    return 0


def _rerun_all(base: str, run_ids: list[str]) -> Iterator[tuple[str, str | None, str]]:
    """Re-run each run, ``PARALLEL`` at a time: ``(original, new id or None, error)``
    as each finishes."""
    def one(run_id: str) -> tuple[str, str | None, str]:
        try:
            return run_id, str(api_call(base, _rerun_path(run_id), {})["run_id"]), ""
        except CliError as exc:
            return run_id, None, str(exc)

    with ThreadPoolExecutor(PARALLEL) as pool:
        yield from pool.map(one, run_ids)


def _rerun_bulk(base: str, args: argparse.Namespace) -> int:
    found = api_call(base, "/v1/reruns", {**_bulk_body(args), "dry_run": True})
    run_ids = [str(r) for r in found.get("run_ids") or []]
    print(f"{len(run_ids)} run{'' if len(run_ids) == 1 else 's'} match", flush=True)
    if args.dry_run:
        for run_id in run_ids:
            print(run_id)
        return 0
    if not run_ids:
        return 0
    done: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    if sys.stdout.isatty():
        from rich.progress import Progress

        with Progress() as progress:
            task = progress.add_task("re-running", total=len(run_ids))
            for original, new, err in _rerun_all(base, run_ids):
                (done if new else failed).append((original, new or err))
                progress.advance(task)
    else:
        for i, (original, new, err) in enumerate(_rerun_all(base, run_ids), 1):
            (done if new else failed).append((original, new or err))
            print(f"[{i}/{len(run_ids)}] {original} -> {new or 'failed: ' + err}",
                  flush=True)
    for original, err in failed:
        print(f"stepstream runs: error: {original}: {err}", file=sys.stderr)
    print(f"re-ran {len(done)} of {len(run_ids)} runs"
          + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def cmd_rerun(args: argparse.Namespace, base: str) -> int:
    """``stepstream runs rerun`` against the API at ``base``."""
    _check(args)
    if args.run_id is not None:
        return _rerun_one(base, args)
    return _rerun_bulk(base, args)
