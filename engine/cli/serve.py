"""Long-running commands: ``stepstream dev`` and ``stepstream engine``.

Each starts, in order: (dev broker), topics, engine, event ingest, HTTP API, (worker
child), and on SIGINT/SIGTERM stops what it started in reverse order and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from engine.api.http import bound_urls, event_keys_from_env, make_app, start_server
from engine.api.ingest import EventIngest
from engine.children import die_with_parent
from engine.cli.brokers import configured_brokers, read_file, trial_client
from engine.cli.client import CliError
from engine.cli.devbroker import (
    DEFAULT_PORT,
    DevBroker,
    DevBrokerError,
    free_port,
    port_is_free,
)
from engine.cli.devsession import (
    DevBusyError,
    DevLock,
    check_ports,
    dev_files,
    lock_paths,
    remove_if_ours,
    write_file,
)
from engine.cli.devterminal import DevTerminal
from engine.cli.provision import ProvisionError, ensure_topics
from topics.settings import (
    DEV_API_FILE,
    DEV_BROKER_FILE,
    Settings,
    SettingsError,
    settings_from,
)

# Written into a dev state directory so that a later `stepstream dev` may wipe it: we
# never delete a directory we did not create (--state-dir could point anywhere).
DEV_STATE_MARKER = ".stepstream-dev-state"
WORKER_STOP_GRACE_S = 10.0
API_SWITCH_INTERVAL_S = 0.001


@dataclass(frozen=True, slots=True)
class DevOptions:
    """Options of ``stepstream dev``."""

    app: str | None = None
    host: str = "127.0.0.1"
    port: int = 8288
    broker_port: int | None = None
    state_dir: Path = Path(".stepstream/state")
    concurrency: int | None = None
    # No line per failed, retried or cancelled run, and no function logs below WARNING.
    quiet: bool = False
    metrics_port: int | None = None


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Options of ``stepstream engine``."""

    host: str = "127.0.0.1"
    port: int = 8288
    state_dir: Path = Path(".stepstream/engine-state")
    create_topics: bool = True


def say(message: str) -> None:
    """A line for the person at the terminal."""
    print(message, flush=True)


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    # The first SIGINT/SIGTERM unwinds the start-up or shutdown in progress; further
    # ones are ignored so the reverse-order shutdown (each step bounded) completes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _load_settings(brokers: str | None = None) -> Settings:
    try:
        return settings_from(os.environ, brokers=brokers, read_text=read_file,
                             trial_client=trial_client)
    except SettingsError as exc:
        raise CliError(str(exc), 2) from None


def prepare_dev_state_dir(state_dir: Path) -> None:
    """Empty ``state_dir`` for a fresh dev broker (old state would not match its empty
    topics), refusing to touch a directory stepstream did not create."""
    if state_dir.exists():
        entries = list(state_dir.iterdir())
        if entries and not (state_dir / DEV_STATE_MARKER).exists():
            raise CliError(f"{state_dir} is not empty and was not created by `stepstream "
                           f"dev`; refusing to wipe it (choose another --state-dir)", 2)
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    (state_dir / DEV_STATE_MARKER).write_text("state of `stepstream dev`; wiped at start\n")


# The banner's example event: one that starts a run of the example app `make dev` runs.
EXAMPLE_APP = "examples.shop:client"
EXAMPLE_EVENT = ("shop/order.created", {"order_id": 1, "total": 12.5})


def _claim_folder(opts: DevOptions) -> DevLock:
    """Lock the folder and check the ports before anything is wiped or written, so a
    second `stepstream dev` leaves the running one alone; raises CliError (exit 2)."""
    lock = DevLock(lock_paths(opts.state_dir))
    try:
        lock.acquire(f"http://{opts.host}:{opts.port}")
        ports = [("--port, the API", opts.host, opts.port)]
        if opts.broker_port is not None and configured_brokers(os.environ) is None:
            ports.append(("--broker-port, the dev broker", DevBroker.HOST, opts.broker_port))
        check_ports(ports)
    except DevBusyError as exc:
        lock.release()
        raise CliError(str(exc), 2) from None
    return lock


def _record(stack: contextlib.ExitStack, paths: list[Path], text: str) -> None:
    for path in paths:
        write_file(path, text)
        stack.callback(remove_if_ours, path, text)


def run_dev(opts: DevOptions) -> int:
    """``stepstream dev``: see the module docstring; returns the exit status."""
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    with contextlib.ExitStack() as stack:
        try:
            lock = _claim_folder(opts)
            stack.callback(lock.release)
            records = dev_files(os.environ)
            brokers = configured_brokers(os.environ)
            broker_note = "(configured)"
            if brokers is None:
                port = opts.broker_port
                if port is None:
                    port = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()
                prepare_dev_state_dir(opts.state_dir)
                try:
                    broker = DevBroker(port).start()
                except DevBrokerError as exc:
                    raise CliError(str(exc)) from None
                stack.callback(broker.stop)
                brokers = broker.address
                _record(stack, records[DEV_BROKER_FILE], brokers)
                broker_note = "(Tansu, in memory: stopping it loses every event and run)"
            else:
                opts.state_dir.mkdir(parents=True, exist_ok=True)
            settings = _load_settings(brokers)
            worker_cmd = None
            if opts.app:
                worker_cmd = [sys.executable, "-m", "engine", "worker", opts.app]
                if opts.concurrency:
                    worker_cmd += ["--concurrency", str(opts.concurrency)]
                if opts.quiet:
                    worker_cmd.append("--quiet")
                if opts.metrics_port is not None:
                    worker_cmd += ["--metrics-port", str(opts.metrics_port)]

            def banner(urls: list[str], worker_pid: int | None) -> None:
                api = urls[0] if urls else f"http://{opts.host}:{opts.port}"
                lock.update(api)
                _record(stack, records[DEV_API_FILE], api)
                name, data = (EXAMPLE_EVENT if opts.app == EXAMPLE_APP
                              else ("app/event.name", {"n": 1}))
                say("stepstream dev")
                say(f"  broker  {brokers} {broker_note}")
                say(f"  api     {api}")
                say(f"  dashboard {api}/")
                say(f"  state   {opts.state_dir}")
                if opts.app:
                    say(f"  worker  {opts.app} (pid {worker_pid})")
                say("send an event" + ("" if opts.app == EXAMPLE_APP else
                                       " (named as one of your functions' triggers)") + ":")
                body = json.dumps({"name": name, "data": data})
                say(f"  curl -X POST {api}/e/dev -d {shlex.quote(body)}")
                say(f"  stepstream send {name} {shlex.quote(json.dumps(data))}")
                say("then: stepstream runs list | stepstream runs show RUN_ID")
                if not opts.quiet:
                    say("failed, retried and cancelled runs and ctx.logger output show "
                        "below (--quiet silences them)")
                    stack.callback(DevTerminal(settings, say).start().stop)
                say("Ctrl-C stops everything.")

            return _run(stack, settings, opts.state_dir, host=opts.host, port=opts.port,
                        dev=True, event_keys=frozenset(), create_topics=True,
                        worker_cmd=worker_cmd, banner=banner)
        except KeyboardInterrupt:
            say("stopping")
            return 0
        finally:
            _ignore_signals()  # before the stack unwinds: shutdown must not be cut short


def run_engine(opts: EngineOptions) -> int:
    """``stepstream engine``: against configured brokers; returns the exit status.
    Refuses to start (:class:`CliError`, exit 2) without ``STEPSTREAM_API_KEYS``."""
    api_keys = event_keys_from_env(os.environ.get("STEPSTREAM_API_KEYS"))
    if not api_keys:
        # Refuse rather than serve runs to anyone, or invent a key that would then sit
        # in logs and change on every restart.
        raise CliError("STEPSTREAM_API_KEYS is not set: the /v1 API needs at least one "
                       "key outside dev mode (comma-separated; clients send "
                       "'Authorization: Bearer <key>'), or use `stepstream dev`", 2)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    settings = _load_settings(configured_brokers(os.environ))
    keys = event_keys_from_env(os.environ.get("STEPSTREAM_EVENT_KEYS"))
    with contextlib.ExitStack() as stack:
        try:
            opts.state_dir.mkdir(parents=True, exist_ok=True)

            def banner(urls: list[str], worker_pid: int | None) -> None:
                say(f"stepstream engine: brokers {settings.brokers}, "
                    f"api {', '.join(urls)}, state {opts.state_dir}")
                if not keys:
                    say("warning: STEPSTREAM_EVENT_KEYS is not set: POST /e/{key} refuses "
                        "every key")

            return _run(stack, settings, opts.state_dir, host=opts.host, port=opts.port,
                        dev=False, event_keys=keys, api_keys=api_keys,
                        create_topics=opts.create_topics, worker_cmd=None, banner=banner)
        except KeyboardInterrupt:
            say("stopping")
            return 0
        finally:
            _ignore_signals()


def _run(stack: contextlib.ExitStack, settings: Settings, state_dir: Path, *, host: str,
         port: int, dev: bool, event_keys: frozenset[str], create_topics: bool,
         api_keys: frozenset[str] = frozenset(),
         worker_cmd: list[str] | None,
         banner: Callable[[list[str], int | None], None]) -> int:
    try:
        created = ensure_topics(settings, create=create_topics)
    except ProvisionError as exc:
        raise CliError(str(exc)) from None
    if created:
        say(f"created topics: {', '.join(created)}")
    if not dev:
        # The dev broker is memory-only by design; a cluster's topics are checked for
        # durability and configs, as `stepstream topics check` does, and reported.
        from engine.cli.topics import finding_lines, findings
        try:
            for line in finding_lines(findings(settings)):
                say(("warning: " if not line.startswith(" ") else "") + line)
        except ProvisionError as exc:
            say(f"warning: the topics could not be checked: {exc}")
    from engine.app import Engine

    # The API's event loop shares the GIL with the processor and the query threads. At
    # the default 5 ms switch interval each GIL hand-back to the loop can wait 5 ms per
    # busy thread, several times per request: /health took 300 ms under API fuzzing.
    sys.setswitchinterval(API_SWITCH_INTERVAL_S)
    engine = Engine(settings, state_dir)
    engine.start()
    stack.callback(engine.stop)
    ingest = EventIngest(settings)
    ingest.start()
    stack.callback(ingest.close)
    # Any engine answers for any run: the API asks this engine's partitions and its
    # peers' (docs/architecture.md, "Any engine answers"); alone, it answers alone.
    from engine.cluster.peers import Peers, advertised_url
    from engine.cluster.queries import ClusterQueries, add_routes

    processor = engine.processor
    peers = Peers(settings, processor.owned_partitions, processor.assignment_changed)
    queries = ClusterQueries(engine.queries, processor.owned_partitions, peers,
                             partitions=settings.partitions,
                             timeout_s=settings.peer_timeout_ms / 1000,
                             api_key=min(api_keys, default=None))
    stack.callback(queries.close)
    app = make_app(queries, ingest, dev=dev, event_keys=event_keys, api_keys=api_keys)
    add_routes(app, queries)

    def advertise_then_banner(urls: list[str], worker_pid: int | None) -> None:
        # Only now is the API's address known (--port 0 picks one).
        peers.start(advertised_url(settings.advertised_url, urls))
        stack.callback(peers.stop)
        banner(urls, worker_pid)

    try:
        return asyncio.run(_serve(app, host, port, engine, settings, worker_cmd,
                                  advertise_then_banner))
    finally:
        # Closing the loop put SIGINT/SIGTERM back to their defaults; the engine and
        # broker still have to stop.
        _ignore_signals()


async def _serve(app: Any, host: str, port: int, engine: Any, settings: Settings,
                 worker_cmd: list[str] | None,
                 banner: Callable[[list[str], int | None], None]) -> int:
    try:
        runner = await start_server(app, host, port)
    except OSError as exc:
        raise CliError(f"cannot serve the API on {host}:{port}: {exc.strerror or exc}"
                       ) from None
    loop = asyncio.get_running_loop()
    # Queries, page building and topic reads run on these threads. Each busy one is
    # another contender for the GIL the event loop needs for every request: few
    # threads keep /health quick while a burst of heavy requests queues behind them.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=settings.api_threads,
                                                 thread_name_prefix="stepstream-api"))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker: subprocess.Popen[bytes] | None = None
    try:
        if worker_cmd is not None:
            env = {**os.environ, "STEPSTREAM_BROKERS": settings.brokers or ""}
            # Its own session: the terminal's Ctrl-C reaches only us, and we stop the
            # worker first, while the engine and broker it talks to are still up.
            worker = subprocess.Popen(worker_cmd, env=env, start_new_session=True,
                                      preexec_fn=die_with_parent(signal.SIGTERM))
        banner(list(bound_urls(runner)), worker.pid if worker else None)
        wait_ready = getattr(engine, "wait_ready", lambda timeout: True)
        ready = _in_daemon_thread(loop, wait_ready, 120)
        announced = False
        worker_reported = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if not announced and ready.done() and engine.alive:
                announced = True
                say("engine ready" if ready.result() else
                    "engine not ready after 120 s (partitions not assigned yet)")
            if not engine.alive:
                say(f"engine stopped unexpectedly: {engine.error!r}")
                return 1
            check = getattr(engine, "check_progress", None)
            if check is not None:
                check()
            if worker is not None and not worker_reported and worker.poll() is not None:
                worker_reported = True
                say(f"worker exited with code {worker.returncode}; the engine and API keep "
                    f"running (restart `stepstream dev` to start it again)")
        say("stopping")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        _ignore_signals()
        if worker is not None:
            await asyncio.to_thread(_stop_child, worker)
        await runner.cleanup()


def _in_daemon_thread(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any
                      ) -> asyncio.Future[Any]:
    """``fn(*args)`` on a daemon thread of its own: waiting up to two minutes for the
    partitions must neither take one of the API's few query threads nor hold up exit."""
    done: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: Exception | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def run() -> None:
        result, error = None, None
        try:
            result = fn(*args)
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="stepstream-ready", daemon=True).start()
    return done


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(WORKER_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
