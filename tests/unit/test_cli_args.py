"""Command-line argument errors: exit status 2 and one line saying what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.devbroker import free_port


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
