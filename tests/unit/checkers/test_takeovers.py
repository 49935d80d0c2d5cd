"""Takeover windows read from worker logs (tests/checkers/takeovers.py), no Kafka."""

from __future__ import annotations

from pathlib import Path

from tests.checkers.ledger import Execution, repeats_after_faults
from tests.checkers.takeovers import in_takeover, log_ms, takeovers

LOG = """\
2026-12-01 12:02:46,399 INFO stepstream.worker: worker vm:26922:1423a7: connecting to x
2026-12-01 12:02:49,813 INFO stepstream.worker: handover: 64 of 762 uncommitted task(s) in partitions [0, 1] already finished (220 ms)
2026-12-01 12:02:50,093 INFO stepstream.worker: handover: 318 task(s) resume after 623 checkpointed step(s)
2026-12-01 12:02:50,095 INFO stepstream.worker: worker vm:26922:1423a7: assigned [0, 1]
2026-12-01 12:02:54,978 INFO stepstream.worker: worker vm:26922:1423a7: revoked [0, 1]
2026-12-01 12:02:57,501 INFO stepstream.worker: worker vm:26922:1423a7: assigned [0, 1]
"""


def at(clock: str) -> int:
    return log_ms(f"2026-12-01 {clock[:8]}", clock[9:])


def test_each_assignment_with_the_start_of_its_read(tmp_path: Path) -> None:
    (tmp_path / "w1.log").write_text(LOG)
    assert takeovers([tmp_path / "w1.log"]) == {26922: [
        (at("12:02:49,593"), at("12:02:50,095")), (at("12:02:54,978"), at("12:02:57,501"))]}


def test_a_step_recorded_after_the_read_began_is_excused_one_before_is_not(
        tmp_path: Path) -> None:
    (tmp_path / "w1.log").write_text(LOG)
    taken = takeovers([tmp_path / "w1.log"])
    start = at("12:02:51,849")
    assert in_takeover(taken, 26922, start, recorded_ms=at("12:02:50,285"))
    assert not in_takeover(taken, 26922, start, recorded_ms=at("12:02:49,000"))
    assert not in_takeover(taken, 1, start, recorded_ms=at("12:02:50,285"))  # another pid
    assert not in_takeover(taken, 26922, at("12:02:47,000"), at("12:02:46,500"))  # before any
    # The checker takes the excuse per execution.
    runs = [{"run_id": "r", "timeline": [
        {"type": "step.completed", "step_id": "b", "at": at("12:02:50,285")}]}]
    rerun = [Execution("r", "b", 26922, start)]
    kill = [at("12:02:50,827")]
    assert repeats_after_faults(runs, rerun, kill).violations == 1
    assert repeats_after_faults(runs, rerun, kill, lambda p, s, r: in_takeover(
        taken, p, s, r)).violations == 0
