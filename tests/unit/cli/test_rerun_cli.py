"""``stepstream runs rerun`` in bulk against a stand-in for the API (no engine): the count
first, a rich progress bar on a terminal, a summary, and a failed re-run's exit code;
``runs show`` names both ends of a re-run link."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from rich.console import Console

from engine.api.views import run_view, timeline_text
from engine.cli import rerun as rerun_cli
from engine.cli.client import CliError
from engine.cli.commands import main as cli


class FakeApi:
    def __init__(self, matched: list[str], broken: frozenset[str] = frozenset()) -> None:
        self.matched = matched
        self.broken = broken
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, base: str, path: str, body: dict[str, Any] | None = None,
                 method: str | None = None) -> Any:
        self.calls.append((path, body))
        if path == "/v1/reruns":
            assert body is not None and body["dry_run"] is True
            return {"matched": len(self.matched), "run_ids": self.matched}
        original = path.split("/")[3]
        if original in self.broken:
            raise CliError(f"run.rerun for {original} was not stored: broker down")
        return {"run_id": "NEW-" + original, "rerun_of": original}


ARGS = ["runs", "rerun", "--function", "f", "--status", "failed", "--api", "http://x"]


def test_on_a_terminal_the_count_comes_first_then_a_progress_bar_then_the_summary(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(["R1", "R2", "R3"])
    monkeypatch.setattr(rerun_cli, "api_call", api)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert cli(ARGS) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 runs match\n")
    assert "re-running" in out and "100%" in out  # rich's bar, finished
    assert out.rstrip().endswith("re-ran 3 of 3 runs")
    assert sorted(p for p, _ in api.calls[1:]) == [f"/v1/runs/R{i}/rerun" for i in (1, 2, 3)]


def test_a_re_run_that_failed_is_named_and_the_exit_code_is_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(rerun_cli, "api_call", FakeApi(["R1", "R2"], frozenset({"R2"})))
    assert cli(ARGS) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "2 runs match"
    assert captured.out.rstrip().endswith("re-ran 1 of 2 runs; 1 failed")
    assert "R2: run.rerun for R2 was not stored" in captured.err


def test_run_show_names_the_re_run_links() -> None:
    state = {"run_id": "N1", "fn_id": "f", "status": "completed", "rerun_of": "R1",
             "reruns": ["N2"], "event": {}, "steps": {}, "timeline": []}
    out = io.StringIO()
    Console(file=out, width=200).print(timeline_text(run_view(state)))
    assert "re-run of run R1" in out.getvalue()
    assert "re-run as run N2" in out.getvalue()
