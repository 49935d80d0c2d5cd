"""API keys outside dev mode (no Kafka): 401 without a key, 403 with a wrong one, the
CLI sending the key, the engine refusing to start without keys and binding loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from engine.api.http import make_app
from engine.cli import CliError, build_parser, main
from engine.cli.serve import EngineOptions, run_engine
from tests.unit.api.test_http import CANCELLABLE, FakeIngest, FakeQueries, run
from tests.unit.cli.test_args import ApiThread

KEYS = frozenset({"k-one", "k-two"})
V1_PATHS = [("GET", "/v1/runs"), ("GET", "/v1/runs/R9"), ("GET", "/v1/events/E1/runs"),
            ("GET", "/v1/state/hash"), ("GET", "/v1/functions"),
            ("POST", "/v1/runs/R9/cancel"), ("GET", "/v1/no-such-path"), ("GET", "/v1//runs"),
            ("GET", "/elsewhere")]


def test_v1_needs_a_bearer_key_outside_dev_mode() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        for method, path in V1_PATHS:
            r = await c.request(method, path)
            got = await r.json()
            assert r.status == 401 and got["status"] == 401, (path, got)
            assert "STEPSTREAM_API_KEYS" in got["error"]
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            for header in ("Basic azE6azI=", "Bearer", "k-one", "Bearer  "):
                r = await c.request(method, path, headers={"Authorization": header})
                assert r.status == 401, (path, header)
            for wrong in ("k-three", "k-on", "k-one,k-two", "\u00e9"):
                r = await c.request(method, path, headers={"Authorization": f"Bearer {wrong}"})
                got = await r.json()
                assert r.status == 403 and "not accepted" in got["error"], (path, wrong)
        assert ing.cancels == []
        for key in KEYS:
            ok = {"Authorization": f"Bearer {key}"}
            r = await c.get("/v1/runs/R9", headers=ok)
            assert r.status == 200 and (await r.json())["data"]["run_id"] == "R9"
            r = await c.get("/v1/runs", headers={"Authorization": f"bearer {key}"})
            assert r.status == 200
        r = await c.post("/v1/runs/R9/cancel", headers={"Authorization": "Bearer k-two"})
        assert r.status == 202 and ing.cancels == [("R9", "fn/acct-7", None)]
        # Open: health, and event ingest, which checks its own event key.
        assert (await c.get("/health")).status == 200
        assert (await c.post("/e/ev-key", json={"name": "a"})).status == 200
        assert (await c.post("/e/wrong", json={"name": "a"})).status == 401

    async def main_() -> None:
        from aiohttp.test_utils import TestServer
        ing = FakeIngest()
        app = make_app(FakeQueries(CANCELLABLE), ing, dev=False,
                       event_keys=frozenset({"ev-key"}), api_keys=KEYS)
        async with TestClient(TestServer(app)) as client:
            await t(client, ing)

    asyncio.run(main_())


def test_dev_mode_needs_no_key() -> None:
    async def t(c: TestClient[Any, Any], ing: FakeIngest) -> None:
        assert (await c.get("/v1/runs")).status == 200
        assert (await c.get("/v1/runs", headers={"Authorization": "Bearer x"})).status == 200
    run(t)


class KeyedApi(ApiThread):
    """The API outside dev mode, with KEYS."""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = make_app(self.queries, self.ingest, dev=False, event_keys=frozenset(),
                       api_keys=KEYS)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        self.loop.run_until_complete(site.start())
        self.started.set()
        self.loop.run_forever()


def test_the_cli_sends_the_key_from_stepstream_api_keys(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("STEPSTREAM_API", raising=False)
    with KeyedApi(CANCELLABLE) as api:
        monkeypatch.delenv("STEPSTREAM_API_KEYS", raising=False)
        assert main(["runs", "show", "R9", "--api", api.url]) == 1
        err = capsys.readouterr().err
        assert "HTTP 401" in err and "STEPSTREAM_API_KEYS" in err
        monkeypatch.setenv("STEPSTREAM_API_KEYS", "nope")
        assert main(["runs", "list", "--api", api.url]) == 1
        assert "HTTP 403" in capsys.readouterr().err
        monkeypatch.setenv("STEPSTREAM_API_KEYS", " k-two , k-one")
        assert main(["runs", "show", "R9", "--api", api.url]) == 0
        assert main(["runs", "cancel", "R9", "--api", api.url]) == 0
        assert "R9: cancelling" in capsys.readouterr().out
        assert api.ingest.cancels == [("R9", "fn/acct-7", None)]


def test_engine_listens_on_loopback_unless_told_otherwise() -> None:
    assert build_parser().parse_args(["engine"]).host == "127.0.0.1"
    assert build_parser().parse_args(["dev"]).host == "127.0.0.1"
    assert build_parser().parse_args(["engine", "--host", "0.0.0.0"]).host == "0.0.0.0"
    assert EngineOptions().host == "127.0.0.1"


@pytest.mark.parametrize("value", [None, "", " , "])
def test_engine_refuses_to_start_without_api_keys(
        value: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEPSTREAM_BROKERS", "127.0.0.1:1")
    if value is None:
        monkeypatch.delenv("STEPSTREAM_API_KEYS", raising=False)
    else:
        monkeypatch.setenv("STEPSTREAM_API_KEYS", value)
    with pytest.raises(CliError) as info:
        run_engine(EngineOptions(state_dir=tmp_path / "state"))
    assert info.value.code == 2 and "STEPSTREAM_API_KEYS" in str(info.value)
    assert main(["engine", "--state-dir", str(tmp_path / "s2")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "STEPSTREAM_API_KEYS is not set" in lines[0]
    assert not (tmp_path / "state").exists() and not (tmp_path / "s2").exists()
