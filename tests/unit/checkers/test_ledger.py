"""The campaign's checkers on hand-made ledgers and run views: each finds what it must
and nothing else."""

from __future__ import annotations

from typing import Any

from tests.checkers.ledger import (
    Execution,
    each_event_in_one_run,
    exactly_its_runs,
    limit_never_exceeded,
    ms,
    no_run_stuck,
    one_run_per_tick,
    parse_ledger,
    repeats_after_faults,
    timers_never_early,
)
from tests.checkers.verdict import EXAMPLES, Check


def run(run_id: str, status: str = "Completed", **recorded: Any) -> dict[str, Any]:
    return {"run_id": run_id, "status": status,
            "timeline": [{"type": "run.requested", "at": 0}] + [
                {"type": "step.completed", "step_id": s, "at": at}
                for s, at in recorded.items()]}


def test_parse_reads_both_ledger_formats_and_skips_a_line_cut_by_a_kill() -> None:
    text = "r1 a 10 100\nr1 b 10 120 130 three -\nr2 tick 11 5 6 ticker 2000\nr3 c 1"
    assert parse_ledger(text) == [
        Execution("r1", "a", 10, 100),
        Execution("r1", "b", 10, 120, 130, "three", "-"),
        Execution("r2", "tick", 11, 5, 6, "ticker", "2000")]


def test_ms_reads_epoch_ms_and_rfc3339() -> None:
    assert ms(1764590000123) == 1764590000123
    assert ms("2025-12-01T12:00:00.123Z") == 1764590400123


def test_a_step_recorded_before_a_kill_and_started_after_it_is_a_repeat() -> None:
    runs = [run("r1", a=100, b=300)]
    executions = [Execution("r1", "a", 1, 90), Execution("r1", "b", 1, 250),
                  Execution("r1", "a", 2, 400),   # recorded at 100, kill at 200: repeat
                  Execution("r1", "b", 2, 410)]   # recorded at 300, after the kill: fine
    check = repeats_after_faults(runs, executions, [200])
    assert (check.checked, check.violations) == (2, 1)
    assert check.examples == [{"run_id": "r1", "step": "a", "recorded_ms": 100,
                               "rerun_ms": [400]}]


def test_a_repeat_is_charged_to_the_last_fault_before_it_started() -> None:
    runs = [run("r1", a=300)]
    # Recorded at 300: a start after the fault at 200 but before the one at 500 is the
    # step's first execution being late, not a repeat; one after 500 is.
    assert repeats_after_faults(runs, [Execution("r1", "a", 1, 250)], [200, 500]).violations == 0
    assert repeats_after_faults(runs, [Execution("r1", "a", 1, 600)], [200, 500]).violations == 1
    assert repeats_after_faults(runs, [Execution("r1", "a", 1, 600)], []).violations == 0


def test_exactly_its_runs_counts_lost_and_doubled_events() -> None:
    check = exactly_its_runs({"e1": [run("r1")], "e2": [], "e3": [run("r3"), run("r4")]})
    assert (check.checked, check.violations) == (3, 2)
    assert [x["event_id"] for x in check.examples] == ["e2", "e3"]


def test_each_event_in_one_batch() -> None:
    runs = [{"run_id": "b1", "event_ids": ["e1", "e2"]}, {"run_id": "b2", "event_ids": ["e2"]}]
    check = each_event_in_one_run(["e1", "e2", "e3"], runs)
    assert (check.checked, check.violations) == (3, 2)  # e2 twice, e3 never


def test_a_run_not_ended_is_stuck_and_shown_with_its_last_timeline() -> None:
    check = no_run_stuck([run("r1"), run("r2", "Running", a=5), run("r3", "cancelled")])
    assert (check.checked, check.violations) == (3, 1)
    [stuck] = check.examples
    assert stuck["run_id"] == "r2" and stuck["timeline"][-1]["step_id"] == "a"


def test_a_step_after_a_sleep_that_starts_before_its_until_is_early() -> None:
    view = {"run_id": "r1", "steps": [{"id": "nap", "until": "2025-12-01T12:00:02.000Z"}]}
    due = ms("2025-12-01T12:00:02.000Z")
    ok = timers_never_early([view], [Execution("r1", "after", 1, due)], "nap", "after")
    early = timers_never_early([view], [Execution("r1", "after", 1, due - 1)], "nap", "after")
    assert (ok.checked, ok.violations) == (1, 0)
    assert (early.violations, early.examples[0]["early_ms"]) == (1, 1)


def test_limit_counts_each_start_past_the_limit() -> None:
    ex = [Execution(f"r{i}", "w", 1, s, e, "limited") for i, (s, e) in
          enumerate([(0, 10), (5, 15), (10, 20), (12, 30), (14, 16)])]
    # 10: r0 ends as r2 starts (2 open); 12: r1, r2, r3 open (3); 14: four open.
    check = limit_never_exceeded(ex, "limited", 2)
    assert (check.checked, check.violations) == (5, 2)
    assert limit_never_exceeded(ex, "limited", 4).violations == 0
    assert limit_never_exceeded(ex, "other", 1).checked == 0


def test_one_run_per_tick() -> None:
    ex = [Execution("r1", "tick", 1, 0, 1, "ticker", "2000"),
          Execution("r1", "tick", 2, 5, 6, "ticker", "2000"),   # a re-execution: fine
          Execution("r2", "tick", 1, 0, 1, "ticker", "4000"),
          Execution("r3", "tick", 1, 0, 1, "ticker", "4000")]   # a second run: not
    check = one_run_per_tick(ex, "ticker")
    assert (check.checked, check.violations) == (2, 1)


def test_a_check_keeps_only_a_few_examples_and_merges() -> None:
    a, b = Check("x"), Check("x")
    for i in range(EXAMPLES + 3):
        a.case(False, i)
    b.case(True)
    b.violation("exit")
    a.merge(b)
    assert (a.checked, a.violations) == (EXAMPLES + 4, EXAMPLES + 4)
    assert a.examples == list(range(EXAMPLES))
    assert a.as_dict()["invariant"] == "x"
