"""The ``stepstream`` command line.

Commands: ``dev`` (everything on one machine, with a dev broker), ``engine`` (against
configured brokers), ``worker``, ``send``, ``runs show|list|cancel|rerun``
(:mod:`engine.cli.rerun`),
``functions list|show|remove`` (:mod:`engine.cli.functions`), ``replay``. A malformed
argument prints one line and exits 2; a failure at run time prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from engine.cli.brokers import DEFAULT_API
from engine.cli.cancel import add_arguments as add_cancel_arguments
from engine.cli.cancel import run as cancel_runs
from engine.cli.client import CliError, api_get, api_url
from topics.settings import SettingsError

_APP_REF = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the message says what is wrong, and
        # --help is there for the rest.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# --- argument types ---------------------------------------------------------------


def app_ref(value: str) -> str:
    """``module:attribute`` (dotted names allowed on both sides)."""
    if not _APP_REF.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not module:attribute (for example 'shop.app:client')")
    return value


def port(value: str) -> int:
    """A TCP port number, 0-65535."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port {n} is out of range 0-65535")
    return n


def positive(value: str) -> int:
    """An integer of at least 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def list_limit(value: str) -> int:
    """An integer from 1 to 1000."""
    n = positive(value)
    if n > 1000:
        raise argparse.ArgumentTypeError(f"{n} is over the maximum of 1000")
    return n


def run_status(value: str) -> str:
    """A run status (queued, running, completed, failed, cancelled), any case."""
    from engine.api.views import parse_status

    try:
        return parse_status(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def time_ms(value: str) -> int:
    """A time: epoch milliseconds or ISO-8601 (UTC unless it has an offset)."""
    from engine.api.views import parse_time_ms

    try:
        return parse_time_ms(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cancel_reason(value: str) -> str:
    """Why a run is cancelled: free text up to the API's limit."""
    from engine.api.views import MAX_CANCEL_REASON_CHARS

    if len(value) > MAX_CANCEL_REASON_CHARS:
        raise argparse.ArgumentTypeError(
            f"the reason is {len(value)} characters, over the limit of "
            f"{MAX_CANCEL_REASON_CHARS}")
    return value


def json_object(value: str) -> dict[str, Any]:
    """Event data: a JSON object."""
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"event data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("event data must be a JSON object, like '{\"k\": 1}'")
    return data


# --- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    p = _Parser(prog="stepstream", description="Durable functions for Python on Kafka.")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run a dev broker, the engine, the API and a worker")
    dev.add_argument("--app", type=app_ref, help="module:client to run a worker for")
    dev.add_argument("--port", type=port, default=8288, help="HTTP API port (8288)")
    dev.add_argument("--host", default="127.0.0.1", help="HTTP API host (127.0.0.1)")
    dev.add_argument("--broker-port", type=port,
                     help="dev broker port (9092 if free, else any free port)")
    dev.add_argument("--state-dir", type=Path, default=Path(".stepstream/state"),
                     help="engine state directory (.stepstream/state)")
    dev.add_argument("--concurrency", type=positive, help="worker concurrency")
    dev.add_argument("--quiet", action="store_true",
                     help="no line per failed, retried or cancelled run, no function logs")
    dev.add_argument("--metrics-port", type=port, metavar="N",
                     help="serve the worker's Prometheus metrics on this port")

    eng = sub.add_parser("engine", help="run the engine and API against configured brokers")
    eng.add_argument("--port", type=port, default=8288, help="HTTP API port (8288)")
    eng.add_argument("--host", default="127.0.0.1",
                     help="HTTP API address to listen on (127.0.0.1; 0.0.0.0 for every "
                          "interface)")
    eng.add_argument("--state-dir", type=Path, default=Path(".stepstream/engine-state"),
                     help="engine state directory (.stepstream/engine-state)")
    eng.add_argument("--no-create-topics", action="store_true",
                     help="only check that the topics exist")

    wrk = sub.add_parser("worker", help="run the functions of module:client")
    wrk.add_argument("app", type=app_ref, metavar="module:client")
    wrk.add_argument("--concurrency", type=positive, help="concurrent runs")
    wrk.add_argument("--quiet", action="store_true",
                     help="no function logs below WARNING (ctx.logger.info is shown otherwise)")
    wrk.add_argument("--metrics-port", type=port, metavar="N",
                     help="serve Prometheus metrics at http://HOST:N/metrics")
    wrk.add_argument("--metrics-host", default="127.0.0.1",
                     help="address the metrics listen on (127.0.0.1)")

    snd = sub.add_parser("send", help="send one event")
    snd.add_argument("name", help="event name, e.g. shop/order.created")
    snd.add_argument("data", type=json_object, nargs="?", default={},
                     help="event data as a JSON object")
    snd.add_argument("--id", dest="event_id", help="event id (default: a new ULID)")

    runs = sub.add_parser("runs", help="inspect runs through the HTTP API")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True,
                                   metavar="show|list|cancel|rerun")
    show = runs_sub.add_parser("show", help="one run with its timeline")
    show.add_argument("run_id")
    show.add_argument("--api", type=api_url, help=f"API base URL ({DEFAULT_API})")
    lst = runs_sub.add_parser("list", help="recent runs, newest first")
    lst.add_argument("--function", metavar="FN_ID", help="only runs of this function id")
    lst.add_argument("--status", type=run_status, action="append", metavar="STATUS",
                     help="only runs in this status: queued, running, completed, failed "
                          "or cancelled (repeat for several)")
    lst.add_argument("--since", type=time_ms, metavar="TIME",
                     help="only runs requested at or after TIME (epoch ms or ISO-8601)")
    lst.add_argument("--until", type=time_ms, metavar="TIME",
                     help="only runs requested before TIME (epoch ms or ISO-8601)")
    lst.add_argument("--limit", type=list_limit, default=20, help="how many (20)")
    lst.add_argument("--cursor", "--before", dest="cursor", metavar="RUN_ID",
                     help="only runs older than this run id (the next page's cursor)")
    lst.add_argument("--api", type=api_url, help=f"API base URL ({DEFAULT_API})")
    cancel = runs_sub.add_parser("cancel", help="cancel a queued or running run, or every "
                                                "one a filter matches")
    add_cancel_arguments(cancel, time_ms=time_ms, reason=cancel_reason)
    cancel.add_argument("--api", type=api_url, help=f"API base URL ({DEFAULT_API})")
    from engine.cli.rerun import add_parser as add_rerun_parser

    add_rerun_parser(runs_sub, run_status, time_ms)

    from engine.cli.functions import add_parser as add_functions_parser
    from engine.cli.topics import add_parser as add_topics_parser

    add_functions_parser(sub)
    add_topics_parser(sub)

    rep = sub.add_parser("replay", help="rebuild every state table from the topics")
    rep.add_argument("--state-dir", type=Path,
                     help="empty directory to rebuild into (default: a new temp dir)")
    return p


# --- commands ---------------------------------------------------------------------


def _settings() -> Any:
    from engine.cli.brokers import load_settings

    try:
        return load_settings(os.environ)
    except SettingsError as exc:
        raise CliError(str(exc), 2) from None


def cmd_dev(args: argparse.Namespace) -> int:
    """``stepstream dev``."""
    from engine.cli.serve import DevOptions, run_dev

    return run_dev(DevOptions(app=args.app, host=args.host, port=args.port,
                              broker_port=args.broker_port, state_dir=args.state_dir,
                              concurrency=args.concurrency, quiet=args.quiet,
                              metrics_port=args.metrics_port))


def cmd_engine(args: argparse.Namespace) -> int:
    """``stepstream engine``."""
    from engine.cli.brokers import configured_brokers
    from engine.cli.serve import EngineOptions, run_engine

    if not configured_brokers(os.environ):
        raise CliError("no brokers configured: set STEPSTREAM_BROKERS (or "
                       "KAFKA_BOOTSTRAP_SERVERS), or use `stepstream dev`", 2)
    return run_engine(EngineOptions(host=args.host, port=args.port,
                                    state_dir=args.state_dir,
                                    create_topics=not args.no_create_topics))


def load_app(ref: str) -> Any:
    """Import ``module:attribute`` with the working directory on ``sys.path``;
    raises :class:`CliError` (exit 2) with one line if that fails."""
    module_name, _, attr_path = ref.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(f"cannot import {module_name!r}: no module named {exc.name!r} "
                           f"(looked in {cwd} and sys.path)", 2) from None
        raise CliError(f"cannot import {module_name!r}: {_where(exc)}", 2) from None
    except Exception as exc:  # the user's module failed while importing
        raise CliError(f"cannot import {module_name!r}: {_where(exc)}", 2) from None
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr_path!r}", 2
                           ) from None
    return obj


def _where(exc: BaseException) -> str:
    """``Type: message (file:line)`` for the innermost frame of an exception."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        at = f" ({exc.filename}:{exc.lineno})"
    elif frames:
        at = f" ({frames[-1].filename}:{frames[-1].lineno})"
    else:
        at = ""
    return f"{type(exc).__name__}: {exc}{at}"


class _FunctionLogFormat(logging.Formatter):
    """``ctx.logger`` lines, tagged with the run (records from elsewhere lack the tags)."""

    def format(self, record: logging.LogRecord) -> str:
        fn_id, run_id = getattr(record, "fn_id", ""), getattr(record, "run_id", "")
        at = self.formatTime(record, "%H:%M:%S")
        where = f"{fn_id}  {run_id}  " if run_id else ""
        return f"{at}  {'log':<11} {where}{record.levelname.lower()}: {record.getMessage()}"


def show_function_logs() -> None:
    """Print the functions' ``ctx.logger`` output from INFO up, whatever ``-v`` says:
    it is the user's own logging, the first thing they look for."""
    fn_logger = logging.getLogger("stepstream.function")
    handler = logging.StreamHandler()
    handler.setFormatter(_FunctionLogFormat())
    fn_logger.addHandler(handler)
    fn_logger.setLevel(min(fn_logger.getEffectiveLevel(), logging.INFO))
    fn_logger.propagate = False


def cmd_worker(args: argparse.Namespace) -> int:
    """``stepstream worker module:client``: duck-typed, so the engine never imports sdk."""
    client = load_app(args.app)
    factory = getattr(client, "worker", None)
    if not callable(factory):
        raise CliError(f"{args.app} has no worker() method: is it a stepstream Client?", 2)
    if not args.quiet:
        show_function_logs()
    options: dict[str, Any] = {}
    if args.concurrency:
        options["concurrency"] = args.concurrency
    if args.metrics_port is not None:
        options.update(metrics_port=args.metrics_port, metrics_host=args.metrics_host)
    worker = factory(**options)
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        # The SDK's errors that mean "fix the setup" carry the exit status to use
        # (duck-typed: the engine does not import the SDK).
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int):
            raise CliError(str(exc), code) from None
        raise
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """``stepstream send NAME [JSON] [--id ID]``: prints the event id."""
    from engine.api.ingest import EventIngest, IngestError

    settings = _settings()
    event: dict[str, Any] = {"name": args.name, "data": args.data}
    if args.event_id is not None:
        event["id"] = args.event_id
    ingest = EventIngest(settings, delivery_timeout=15)
    try:
        ingest.prepare([event])  # a bad event is an argument error, broker or not
        _check_events_topic(settings)
        (event_id,) = ingest.send_sync([event])
    except IngestError as exc:
        raise CliError(exc.message, 2 if exc.status in (400, 413) else 1) from None
    finally:
        ingest.close()
    print(event_id)
    return 0


def _check_events_topic(settings: Any) -> None:
    """Fail fast with a clear line when the broker or the events topic is not there,
    instead of waiting for a delivery timeout."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from engine.cli.brokers import HOW_TO_SET, resolve_brokers
    from topics.catalog import Catalog

    _, source = resolve_brokers(os.environ)
    topic = Catalog(settings).events
    admin = AdminClient(settings.client_config({
        "log_level": 0, "socket.connection.setup.timeout.ms": 2000}))
    try:
        meta = admin.list_topics(timeout=5)
    except KafkaException:
        raise CliError(f"cannot reach the broker at {settings.brokers} (from {source}); "
                       f"{HOW_TO_SET}", 2) from None
    if topic not in meta.topics:
        raise CliError(f"topic {topic!r} does not exist on the broker at {settings.brokers} "
                       f"(from {source}); start `stepstream dev` or `stepstream engine` "
                       f"first", 2)


def _api_base(args: argparse.Namespace) -> str:
    from engine.cli.brokers import resolve_api

    return resolve_api(args.api, os.environ)[0]


def _list_query(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The ``GET /v1/runs`` query for ``runs list``'s arguments (without the cursor)."""
    query = [("limit", str(args.limit))]
    if args.function is not None:
        query.append(("function", args.function))
    for status in dict.fromkeys(args.status or []):
        query.append(("status", status))
    if args.since is not None:
        query.append(("since", str(args.since)))
    if args.until is not None:
        query.append(("until", str(args.until)))
    return query


def _next_page_command(args: argparse.Namespace, cursor: str) -> str:
    """The ``runs list`` command line that shows the page after this one."""
    words = ["stepstream", "runs", "list"]
    for name, value in _list_query(args):
        words += [f"--{name}", value]
    if args.api:
        words += ["--api", args.api]
    words += ["--cursor", cursor]
    return " ".join(shlex.quote(w) for w in words)


def cmd_runs(args: argparse.Namespace) -> int:
    """``stepstream runs show|list|cancel|rerun``."""
    from rich.console import Console

    from engine.api.views import runs_table, timeline_text

    base = _api_base(args)
    if args.runs_command == "rerun":
        from engine.cli.rerun import cmd_rerun

        return cmd_rerun(args, base)
    if args.runs_command == "cancel":
        return cancel_runs(args, base)
    # Piped output has no terminal width; rich would assume 80 columns and squeeze the
    # tables, so give it room (a terminal's own width is used as is).
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if args.runs_command == "show":
        body = api_get(base, "/v1/runs/" + urllib.parse.quote(args.run_id, safe=""))
        console.print(timeline_text(body["data"]))
        return 0
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise CliError(f"--since ({args.since}) must be before --until ({args.until})", 2)
    query = _list_query(args)
    if args.cursor:
        query.append(("cursor", args.cursor))
    body = api_get(base, "/v1/runs?" + urllib.parse.urlencode(query))
    filtered = bool(args.function or args.status or args.since is not None
                    or args.until is not None)
    if not body.get("data"):
        console.print("no runs match" if filtered else "no runs")
        return 0
    console.print(runs_table(body["data"]))
    # next_cursor since filters came; next from an older engine.
    following = body.get("next_cursor", body.get("next"))
    if following:
        console.print(f"more: {_next_page_command(args, following)}", soft_wrap=True,
                      markup=False, highlight=False)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    """``stepstream topics check|create``."""
    from engine.cli.topics import cmd_topics as run

    return run(args, _settings())


def cmd_functions(args: argparse.Namespace) -> int:
    """``stepstream functions list|show|remove``."""
    from engine.cli.functions import cmd_functions as run

    return run(args, _api_base(args))


def cmd_replay(args: argparse.Namespace) -> int:
    """``stepstream replay``: prints the state hash of the rebuilt tables."""
    from engine.runtime.replay import ReplayError, replay

    settings = _settings()
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="stepstream-replay-"))
    print(f"replaying into {state_dir}", file=sys.stderr)
    try:
        print(replay(settings, Path(state_dir)))
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    return 0


COMMANDS = {"dev": cmd_dev, "engine": cmd_engine, "worker": cmd_worker, "send": cmd_send,
            "runs": cmd_runs, "functions": cmd_functions, "replay": cmd_replay,
            "topics": cmd_topics}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stepstream`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except CliError as exc:
        print(f"stepstream {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
