"""The campaign's command line and report, without a broker."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.__main__ import duration, parse, scenario_list
from tests.chaos.catalog import SCENARIOS
from tests.chaos.report import markdown, write
from tests.chaos.scenarios import Result, as_json
from tests.checkers.verdict import Check


def test_durations() -> None:
    assert [duration(x) for x in ("90", "90s", "3m", "1h")] == [90, 90, 180, 3600]
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        duration("3 minutes")


def test_scenarios_are_named_and_unknown_ones_refused() -> None:
    assert scenario_list("engine-kill, poison") == ["engine-kill", "poison"]
    with pytest.raises(argparse.ArgumentTypeError, match="known: engine-kill"):
        scenario_list("engine-kill,nope")


def test_defaults_and_a_duration_too_short_for_its_scenarios(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = parse([])
    assert args.duration == 900 and args.only == list(SCENARIOS)
    with pytest.raises(SystemExit) as exc:
        parse(["--duration", "40s", "--only", "engine-kill,poison"])
    assert exc.value.code == 2
    assert "too short for 2 scenarios" in capsys.readouterr().err


def report(*results: Result) -> dict[str, Any]:
    rows = [as_json(r) for r in results]
    return {"started": "2026-12-01T12:00:00+00:00", "seconds": 120.0, "seed": 7,
            "rate": 40, "violations": sum(r["violations"] for r in rows), "scenarios": rows}


def test_the_report_gives_each_invariant_per_scenario(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    lost = Check("every acked event has exactly its runs")
    lost.case(True)
    lost.case(False, {"event_id": "e2", "runs": []})
    fine = Check("no 5xx from the API", checked=10)
    a = Result("engine-kill", seconds=60, runs=300, load_seconds=10,
               faults={"engine kill -9": 3}, checks=[lost, fine])
    b = Result("poison", seconds=60, runs=100, load_seconds=10, bad_inputs=42,
               checks=[Check("no 5xx from the API", checked=5)], notes=["dead letters: 40"])
    text = markdown(report(a, b))
    assert "**1 violations**" in text
    assert "| engine-kill | 60 | 300 | 30.0 | 3 engine kill -9 | 0 | 1 |" in text
    assert "| every acked event has exactly its runs | 1/2 | - |" in text
    assert "| no 5xx from the API | 0/10 | 0/5 |" in text
    js, md = write(report(a, b), tmp_path / "chaos-report")
    assert json.loads(js.read_text())["scenarios"][1]["bad_inputs"] == 42
    assert '"event_id": "e2"' in md.read_text() and "dead letters: 40" in md.read_text()
    assert "engine-kill" in capsys.readouterr().out


def test_state_damage_deletes_or_corrupts_one_partition(tmp_path: Path) -> None:
    import random

    from tests.chaos.scenarios import damage

    seen = set()
    for seed in range(30):
        state = tmp_path / str(seed)
        for name in ("runs-0", "waits-0"):
            (state / name).mkdir(parents=True)
            (state / name / "CURRENT").write_bytes(b"MANIFEST-000001\n")
            (state / name / "000007.sst").write_bytes(b"x" * 100)
        how = damage(state, random.Random(seed))
        seen.add(how)
        dbs = {p.name: p for p in state.iterdir()}
        if how == "deleted":
            assert len(dbs) == 1
        elif how == "garbage CURRENT":
            assert sum((p / "CURRENT").read_bytes().startswith(b"\x00") for p in dbs.values()) == 1
        else:
            assert sorted((p / "000007.sst").stat().st_size for p in dbs.values()) == [50, 100]
    assert seen == {"deleted", "garbage CURRENT", "truncated sst"}


def test_fuzzed_requests_use_real_ids_only_with_their_paths_own_method() -> None:
    """A read turned into a DELETE with a real id is a valid request that removes the
    load's own function; the fuzzer sends such method swaps with made-up ids only."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.chaos.fuzz import ENDPOINTS, requests

    real_ids = ["chaos-three", "chaos-limited", "01HREALRUNID0000000000000"]
    reads = {template for method, template in ENDPOINTS if "{id}" in template}
    assert {m for m, t in ENDPOINTS if t in reads} == {"GET"}
    seen = {"real read": 0, "swapped": 0}

    @settings(max_examples=800, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(requests({"id": real_ids}), st.just(None))
    def check(req: Any, _: None) -> None:
        carries_real = any(f"/{rid}" in req.path for rid in real_ids)
        if req.method != "GET":
            assert not carries_real, req
            seen["swapped"] += req.path.startswith("/v1/functions/")
        elif carries_real:
            seen["real read"] += 1

    check()
    assert seen["real read"] > 0 and seen["swapped"] > 0  # both kinds were drawn
