"""The /health checker judges only samples taken while the engine was meant to be up."""

from __future__ import annotations

from pathlib import Path

from tests.checkers.health import health_within, percentiles, read_samples


def test_samples_outside_the_up_intervals_are_not_judged(tmp_path: Path) -> None:
    path = tmp_path / "samples"
    path.write_text("100 5.0 200\n150 0.4 0\n300 150.0 200\n400 2.0 503\n500 1.0 0\n60")
    samples = read_samples(path)
    assert len(samples) == 5  # the last line was cut by the probe's kill
    # Up from 90 to 200 (killed), again from 290 on: every sample is inside one. The
    # refused one at 150 counts (the engine was meant to answer); so do 503 and 150 ms.
    fast, no_5xx = health_within(samples, [(90, 200), (290, None)], 100)
    assert (fast.checked, fast.violations) == (5, 4)
    assert (no_5xx.checked, no_5xx.violations) == (3, 1)
    fast, _ = health_within(samples, [(90, 120)], 100)
    assert (fast.checked, fast.violations) == (1, 0)  # only the first; 150 is after 120


def test_a_request_the_kill_cut_short_is_not_judged() -> None:
    fast, _ = health_within([(100, 50.0, 0)], [(90, 120)], 100)
    assert fast.checked == 0


def test_percentiles_of_answered_samples() -> None:
    samples = [(i, float(i), 200) for i in range(1, 101)] + [(0, 9999.0, 0)]
    assert percentiles(samples) == {"p50": 51.0, "p99": 100.0, "max": 100.0}
    assert percentiles([]) == {}
