"""Command-line argument errors: exit status 2 and one line saying what is wrong."""

from __future__ import annotations

import asyncio
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.api.http import make_app
from engine.cli import main
from engine.cli.devbroker import free_port
from tests.unit.api.test_http import CANCELLABLE, FakeIngest, FakeQueries, _runs_for_filters


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        code = main(argv)
        raise SystemExit(code)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == 2, err
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("STEPSTREAM_BROKERS", "KAFKA_BOOTSTRAP_SERVERS", "STEPSTREAM_API",
                "STEPSTREAM_PARTITIONS"):
        monkeypatch.delenv(var, raising=False)
    # The per-user dev files live under $HOME: never read or write the real ones.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(("argv", "fragment"), [
    ([], "required"),
    (["nope"], "invalid choice"),
    (["worker"], "required"),
    (["worker", "shop"], "not module:attribute"),
    (["worker", "shop:"], "not module:attribute"),
    (["worker", ":client"], "not module:attribute"),
    (["worker", "shop:client:x"], "not module:attribute"),
    (["worker", "my-shop:client"], "not module:attribute"),
    (["dev", "--app", "shop"], "not module:attribute"),
    (["dev", "--port", "http"], "not a port number"),
    (["dev", "--port", "70000"], "out of range"),
    (["dev", "--broker-port", "-1"], "out of range"),
    (["dev", "--concurrency", "0"], "at least 1"),
    (["dev", "--bogus"], "unrecognized arguments"),
    (["send"], "required"),
    (["send", "a/b", "{bad json"], "not valid JSON"),
    (["send", "a/b", "[1, 2]"], "must be a JSON object"),
    (["send", "a/b", "{}", "extra"], "unrecognized arguments"),
    (["runs"], "required"),
    (["runs", "show"], "required"),
    (["runs", "list", "--limit", "0"], "at least 1"),
    (["runs", "list", "--limit", "5000"], "maximum of 1000"),
    (["runs", "list", "--api", "localhost:8288"], "not an http"),
    (["runs", "list", "--status", "done"], "'done' is not a run status"),
    (["runs", "list", "--status", "failed", "--status", "nope"], "'nope' is not a run status"),
    (["runs", "list", "--since", "yesterday"], "neither epoch milliseconds nor an ISO-8601"),
    (["runs", "list", "--until", "2024-13-01"], "neither epoch milliseconds"),
    (["runs", "list", "--since", "-5"], "argument --since: '-5' is neither"),
    (["runs", "list", "--function"], "expected one argument"),
    (["runs", "list", "--since", "2000", "--until", "1000"], "must be before --until"),
    (["runs", "list", "--since", "2024-05-01", "--until", "2024-05-01"],
     "must be before --until"),
    (["runs", "cancel"], "give a RUN_ID, or filters"),
    (["runs", "cancel", "--since", "soon"], "--since"),
    (["runs", "cancel", "R1", "--reason", "x" * 1001], "over the limit of 1000"),
    (["runs", "cancel", "R1", "R2"], "unrecognized arguments"),
    (["runs", "stop", "R1"], "invalid choice"),
    (["functions", "show"], "required"),
    (["functions", "show", "a-f", "b-g", "--json"], "unrecognized arguments"),
    (["functions", "show", "a-f", "--json=yes"], "ignored explicit argument"),
])
def test_bad_arguments(argv: list[str], fragment: str,
                       capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(argv, capsys)
    assert fragment in line
    assert line.startswith("stepstream")


def test_worker_module_not_found(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["worker", "no_such_module_xyz:client"], capsys)
    assert "no module named 'no_such_module_xyz'" in line


def test_worker_missing_attribute(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["worker", "json:nope"], capsys)
    assert "has no attribute 'nope'" in line


def test_worker_not_a_client(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["worker", "json:dumps"], capsys)
    assert "no worker() method" in line


def test_worker_module_raises_on_import(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken_app_mod.py").write_text("x = 1\nraise RuntimeError('bad config')\n")
    line = fails(["worker", "broken_app_mod:client"], capsys)
    assert "RuntimeError: bad config" in line and "broken_app_mod.py:2" in line


def test_worker_from_cwd_runs_duck_typed(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "duck_app_mod.py").write_text(
        "calls = []\n"
        "class W:\n"
        "    def __init__(self, **kw): calls.append(kw)\n"
        "    def run(self): calls.append('ran')\n"
        "class C:\n"
        "    def worker(self, **kw): return W(**kw)\n"
        "client = C()\n")
    assert main(["worker", "duck_app_mod:client", "--concurrency", "3"]) == 0
    import duck_app_mod

    assert duck_app_mod.calls == [{"concurrency": 3}, "ran"]


def test_engine_without_brokers(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["engine"], capsys)
    assert "STEPSTREAM_BROKERS" in line


def test_bad_setting_in_env(monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STEPSTREAM_PARTITIONS", "many")
    line = fails(["replay"], capsys)
    assert "STEPSTREAM_PARTITIONS must be an integer" in line


def test_send_bad_event_is_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["send", "", "{}"], capsys)
    assert "'name' is required" in line


def test_runs_show_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["runs", "show", "R1", "--api", url]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the stepstream API" in lines[0]


class ApiThread:
    """The real HTTP API over in-memory fakes, served on a free port from a thread."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.queries = FakeQueries(runs)
        self.ingest = FakeIngest()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = make_app(self.queries, self.ingest, dev=True, event_keys=frozenset())
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        self.loop.run_until_complete(site.start())
        self.started.set()
        self.loop.run_forever()

    def __enter__(self) -> ApiThread:
        self.thread.start()
        assert self.started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.runner is not None
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def api() -> Iterator[ApiThread]:
    with ApiThread(CANCELLABLE + _runs_for_filters()) as server:
        yield server


def test_runs_cancel(api: ApiThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "cancel", "R9", "--reason", "customer asked", "--api", api.url]) == 0
    out = capsys.readouterr().out
    assert out == "run R9: cancelling\n"
    assert main(["runs", "cancel", "Q1", "--api", api.url]) == 0
    assert api.ingest.cancels == [("R9", "fn/acct-7", "customer asked"), ("Q1", "Q1", None)]


def test_runs_cancel_refused(api: ApiThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "cancel", "NOPE", "--api", api.url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stepstream runs: error: run NOPE not found"]
    assert main(["runs", "cancel", "C1", "--api", api.url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run C1 is already completed" in err[0]
    assert "HTTP" not in err[0]
    assert api.ingest.cancels == []


def test_runs_cancel_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["runs", "cancel", "R1", "--api", url]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the stepstream API" in lines[0]


def test_runs_list_filters(api: ApiThread, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["runs", "list", "--function", "app-a", "--status", "failed", "--status",
            "CANCELLED", "--since", "1970-01-01T00:16:41Z", "--limit", "2", "--api", api.url]
    assert main(argv) == 0
    out = capsys.readouterr().out
    flt = api.queries.last_filter
    assert flt is not None and flt.function == "app-a"
    assert flt.statuses == frozenset({"failed", "cancelled"}) and flt.since == 1_001_000
    assert flt.until is None
    lines = out.splitlines()
    more = [line for line in lines if line.startswith("more: ")]
    assert len(more) == 1, out
    # the next page's command keeps every filter, and works as printed
    next_argv = shlex.split(more[0])[2:]
    assert next_argv[:2] == ["runs", "list"] and "--cursor" in next_argv
    assert main(next_argv) == 0
    assert api.queries.last_filter == flt


def test_runs_list_nothing_matches(api: ApiThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "list", "--function", "nope", "--api", api.url]) == 0
    assert capsys.readouterr().out.strip() == "no runs match"


def test_runs_list_api_refuses(api: ApiThread, capsys: pytest.CaptureFixture[str]) -> None:
    # An argument the CLI lets through but the API refuses: one line, exit 1.
    assert main(["runs", "list", "--function", " ", "--api", api.url]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "function must be a function id" in lines[0]


def test_runs_list_finds_the_dev_api_upward_then_per_user(
        api: ApiThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # `stepstream dev --port P` records its API beside its broker; `runs` finds it from
    # a sub-folder of the project, and from anywhere through the per-user copy.
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / ".stepstream").mkdir()
    (project / ".stepstream" / "dev-api").write_text(api.url + "\n")
    monkeypatch.chdir(project / "src")
    assert main(["runs", "list", "--function", "nope"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == "no runs match"
    (tmp_path / "home" / ".stepstream").mkdir(parents=True)
    (tmp_path / "home" / ".stepstream" / "dev-api").write_text(api.url + "\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["runs", "list", "--function", "nope"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == "no runs match"


def test_worker_setup_errors_exit_with_their_code(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "unreachable_app_mod.py").write_text(
        "class Unreachable(ConnectionError):\n"
        "    exit_code = 2\n"
        "class W:\n"
        "    def run(self): raise Unreachable('cannot reach the broker at h:1')\n"
        "class C:\n"
        "    def worker(self, **kw): return W()\n"
        "client = C()\n")
    line = fails(["worker", "unreachable_app_mod:client"], capsys)
    assert line == "stepstream worker: error: cannot reach the broker at h:1"
