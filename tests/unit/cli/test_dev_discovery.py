"""Finding the dev broker and API from any folder, the dev folder's lock, and librdkafka's
log lines summarised: pure logic and local files, no broker."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path, PurePath

import pytest

from engine.cli.brokers import resolve_api, resolve_brokers
from engine.cli.devbroker import free_port
from engine.cli.devsession import DevBusyError, DevLock, check_ports, lock_paths
from sdk._config import resolve_brokers_from
from sdk._connect import LogSummary
from sdk._producer import Producer
from topics.settings import (
    DEV_API_FILE,
    DEV_BROKER_ADDRESS,
    DEV_BROKER_FILE,
    Settings,
    dev_file_candidates,
    dev_file_trusted,
)

ROOT = Path(__file__).resolve().parents[3]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_candidates_are_the_folder_its_parents_then_home() -> None:
    found = dev_file_candidates(DEV_BROKER_FILE, PurePath("/p/a/b"), {"HOME": "/h"})
    assert found == [PurePath("/p/a/b/.stepstream/dev-broker"),
                     PurePath("/p/a/.stepstream/dev-broker"),
                     PurePath("/p/.stepstream/dev-broker"),
                     PurePath("/.stepstream/dev-broker"),
                     PurePath("/h/.stepstream/dev-broker")]
    # Home is a parent: searched once, in its place.
    assert dev_file_candidates(DEV_BROKER_FILE, PurePath("/h/x"), {"HOME": "/h"})[-1] == \
        PurePath("/.stepstream/dev-broker")


def test_the_broker_is_found_from_a_sub_folder_then_from_the_per_user_file(
        tmp_path: Path) -> None:
    project, home, elsewhere = tmp_path / "project", tmp_path / "home", tmp_path / "elsewhere"
    sub = project / "src" / "pkg"
    sub.mkdir(parents=True)
    elsewhere.mkdir()
    env = {"HOME": str(home)}
    write(project / DEV_BROKER_FILE, "127.0.0.1:5001")
    write(home / DEV_BROKER_FILE, "127.0.0.1:5002")
    project_file = str(project / DEV_BROKER_FILE)
    assert resolve_brokers(env, sub) == ("127.0.0.1:5001", project_file)
    assert resolve_brokers_from(None, env, sub) == ("127.0.0.1:5001", project_file)
    assert resolve_brokers(env, elsewhere) == ("127.0.0.1:5002", str(home / DEV_BROKER_FILE))
    assert resolve_brokers_from(None, env, elsewhere)[0] == "127.0.0.1:5002"
    # Configuration wins over every file; without files, the default says why.
    assert resolve_brokers({**env, "STEPSTREAM_BROKERS": "k:1"}, sub) == ("k:1",
                                                                          "STEPSTREAM_BROKERS")
    address, source = resolve_brokers({}, elsewhere)
    assert address == DEV_BROKER_ADDRESS and "no .stepstream/dev-broker" in source


def test_the_api_is_found_like_the_broker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(tmp_path / "p" / DEV_API_FILE, "http://127.0.0.1:8300/")
    write(home / DEV_API_FILE, "http://127.0.0.1:8301")
    (tmp_path / "p" / "sub").mkdir()
    env = {"HOME": str(home)}
    assert resolve_api(None, env, tmp_path / "p" / "sub")[0] == "http://127.0.0.1:8300"
    assert resolve_api(None, env, tmp_path)[0] == "http://127.0.0.1:8301"
    assert resolve_api(None, {**env, "STEPSTREAM_API": "http://x:1"}, tmp_path)[0] == \
        "http://x:1"
    assert resolve_api("http://y:2", env, tmp_path)[0] == "http://y:2"


def test_a_dev_file_only_its_user_can_have_written_is_trusted() -> None:
    me, other = 1000, 1001
    assert dev_file_trusted(me, 0o100644, me, 0o40755, me)
    assert not dev_file_trusted(other, 0o100644, me, 0o40755, me)  # planted by another user
    assert not dev_file_trusted(me, 0o100644, other, 0o40755, me)  # in their folder
    assert not dev_file_trusted(me, 0o100666, me, 0o40755, me)  # anyone may rewrite it
    assert not dev_file_trusted(me, 0o100644, me, 0o41777, me)  # or replace it (/tmp-like)
    assert not dev_file_trusted(me, 0o100644, me, 0o40775, me)  # or the group may


def test_addresses_in_a_folder_others_can_write_are_ignored(tmp_path: Path) -> None:
    """A parent folder like /tmp: another local user could plant the address files there
    and receive this user's API key, events and step outputs."""
    shared, home = tmp_path / "shared", tmp_path / "home"
    (shared / "me" / "work").mkdir(parents=True)
    write(shared / DEV_BROKER_FILE, "attacker:9092")
    write(shared / DEV_API_FILE, "http://attacker:80")
    write(home / DEV_BROKER_FILE, "127.0.0.1:5002")
    env, cwd = {"HOME": str(home)}, shared / "me" / "work"
    assert resolve_brokers(env, cwd)[0] == "attacker:9092"  # trusted while only mine
    (shared / ".stepstream").chmod(0o777)
    assert resolve_brokers(env, cwd) == ("127.0.0.1:5002", str(home / DEV_BROKER_FILE))
    assert resolve_brokers_from(None, env, cwd)[0] == "127.0.0.1:5002"
    assert resolve_api(None, env, cwd)[0] != "http://attacker:80"
    (shared / ".stepstream").chmod(0o755)
    (shared / DEV_API_FILE).chmod(0o666)
    assert resolve_api(None, env, cwd)[0] != "http://attacker:80"


def test_a_held_folder_lock_names_its_holder(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    state = Path(".stepstream/state")
    first = DevLock(lock_paths(state)).acquire("http://127.0.0.1:8300")
    try:
        # A lock beside another state folder is separate, but the folder's own is held.
        with pytest.raises(DevBusyError) as info:
            DevLock(lock_paths(tmp_path / "elsewhere" / "state")).acquire("x")
        assert "already running in this folder" in str(info.value)
        assert "api http://127.0.0.1:8300" in str(info.value)
    finally:
        first.release()
    DevLock(lock_paths(state)).acquire("x").release()


def test_a_taken_port_is_reported() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(DevBusyError, match=f"port {taken} on 127.0.0.1 is in use"):
            check_ports([("--port", "127.0.0.1", taken)])
    check_ports([("--port", "127.0.0.1", taken), ("--port", "127.0.0.1", 0)])


def test_log_summary_passes_one_line_per_kind_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    summary = LogSummary(logging.getLogger("t.kafka"), interval=30, clock=lambda: now[0])
    fail = "[thrd:h:1/bootstrap]: h:1/bootstrap: Connect failed (after {}ms in state CONNECT)"
    with caplog.at_level(logging.DEBUG, logger="t.kafka"):
        for i in range(500):
            now[0] = i * 0.05
            summary.log(40, "%s [%s] %s", "FAIL", "rdkafka#producer-1", fail.format(i % 7))
        summary.log(30, "%s [%s] %s", "OTHER", "rdkafka#producer-1", "something else")
        now[0] = 31.0
        summary.log(40, "%s [%s] %s", "FAIL", "rdkafka#producer-1", fail.format(3))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "librdkafka FAIL [rdkafka#producer-1]: h:1/bootstrap: Connect failed (after 0ms "
        "in state CONNECT)",
        "librdkafka OTHER [rdkafka#producer-1]: something else",
        "librdkafka FAIL [rdkafka#producer-1]: h:1/bootstrap: Connect failed (after 3ms "
        "in state CONNECT) (and 499 more like it in the last 30 s)",
    ]


def test_a_client_of_a_dead_broker_does_not_flood_stderr(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    producer = Producer(Settings(brokers=f"127.0.0.1:{free_port()}"))
    try:
        with caplog.at_level(logging.INFO, logger="stepstream.kafka"):
            producer.produce_nowait("t", b"k", b"v", partition=0)
            # librdkafka retries the connection every few ms for as long as this waits.
            assert producer.flush(1.5) == 1
    finally:
        producer.close(0)
    err = capfd.readouterr().err
    assert "%3|" not in err, err[:500]
    fails = [r for r in caplog.records if r.name == "stepstream.kafka"]
    assert 1 <= len(fails) <= 3, [r.getMessage() for r in fails]


def test_make_dev_takes_a_port() -> None:
    out = subprocess.run(["make", "-n", "dev", "PORT=8300"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert "stepstream dev --app examples.shop:client --port 8300" in out


def test_a_worker_asked_to_stop_while_registering_stops() -> None:
    # A broker that takes the registrations but never acknowledges them (the delivery
    # timeout is minutes) must not hold a SIGTERM: stop() ends the registration.
    import asyncio

    import sdk
    from sdk._worker import Worker
    from topics.catalog import Catalog

    settings = Settings(brokers="unused:1", prefix="t.")
    client = sdk.Client(app_id="shop", settings=settings)

    @client.create_function(fn_id="f", trigger=sdk.TriggerEvent(event="a/b"))
    async def f(ctx: sdk.Context) -> None:
        return None

    class Unacknowledged:
        async def send(self, *args: object, **kwargs: object) -> None:
            await asyncio.Event().wait()

    worker = Worker(client)
    worker._settings, worker._catalog = settings, Catalog(settings)
    worker._producer = Unacknowledged()  # type: ignore[assignment]

    async def main() -> bool:
        registering = asyncio.ensure_future(worker._register())
        await asyncio.sleep(0)  # let it begin: nothing can acknowledge it anyway
        worker.stop()
        return await asyncio.wait_for(registering, 2)

    assert asyncio.run(main()) is False
