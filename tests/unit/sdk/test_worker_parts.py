"""Worker bookkeeping without a broker: commit positions, stale tasks, report sizing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sdk._offsets import OffsetTracker, SeqMemory, superseded
from sdk._outcomes import fit_report
from topics import records
from topics.codec import encode


def test_position_waits_for_the_lowest_in_flight_offset() -> None:
    t = OffsetTracker()
    assert t.position(0) is None
    for o in (10, 11, 12):
        t.start(0, o)
    assert t.position(0) == 10
    t.done(0, 11)
    assert t.position(0) == 10
    t.done(0, 10)
    assert t.position(0) == 12
    t.done(0, 12)
    assert t.position(0) == 13
    t.skip(0, 20)
    assert t.position(0) == 21


def test_superseded_is_every_task_followed_by_a_later_one_of_its_run() -> None:
    tail = [(10, b"r1"), (11, b"r2"), (12, b"r1"), (13, None), (14, None), (15, b"r3"),
            (16, b"r1"), (17, b"r2")]
    assert superseded(tail) == {10, 11, 12}
    assert superseded([]) == set()


@given(st.lists(st.sampled_from([b"a", b"b", b"c", None]), max_size=40))
def test_superseded_keeps_exactly_the_last_task_of_each_run(keys: list[bytes | None]) -> None:
    tail = list(enumerate(keys, start=100))
    done = superseded(tail)
    last = {k: o for o, k in tail if k is not None}
    assert done == {o for o, k in tail if k is not None and last[k] != o}


def test_known_done_offsets_count_as_done_once_and_move_the_position() -> None:
    t = OffsetTracker()
    t.set_known_done(0, {5, 6})
    t.start(0, 4)
    assert not t.take_known_done(0, 4)
    assert t.take_known_done(0, 5) and t.take_known_done(0, 6)
    assert not t.take_known_done(0, 6)
    t.done(0, 4)
    assert t.position(0) == 7
    t.set_known_done(1, {3})
    t.forget([1])  # revoked before it was read: nothing carries over
    assert not t.take_known_done(1, 3)


def test_take_changed_reports_each_move_once() -> None:
    t = OffsetTracker()
    t.start(0, 5)
    t.start(1, 7)
    assert t.take_changed() == {0: 5, 1: 7}
    assert t.take_changed() == {}
    t.done(1, 7)
    assert t.take_changed([0]) == {}
    assert t.take_changed() == {1: 8}


def test_forget_ignores_late_completions() -> None:
    t = OffsetTracker()
    t.start(0, 5)
    t.forget([0])
    t.done(0, 5)
    assert t.position(0) is None
    assert t.take_changed() == {}


@given(st.lists(st.integers(min_value=0, max_value=50), unique=True, min_size=1),
       st.randoms())
def test_position_never_passes_unfinished_work(offsets: list[int], rnd: object) -> None:
    t = OffsetTracker()
    offsets.sort()
    for o in offsets:
        t.start(0, o)
    pending = set(offsets)
    order = list(offsets)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    for o in order:
        t.done(0, o)
        pending.discard(o)
        pos = t.position(0)
        assert pos is not None
        assert all(p >= pos for p in pending)
        if not pending:
            assert pos == max(offsets) + 1


def test_seq_memory_skips_stale_and_stays_bounded() -> None:
    m = SeqMemory(capacity=2)
    assert not m.is_stale("r1", 1)
    m.started("r1", 1)
    assert m.is_stale("r1", 1) and m.is_stale("r1", 0)
    assert not m.is_stale("r1", 2)
    m.started("r2", 1)
    m.started("r3", 1)
    assert len(m) == 2
    assert not m.is_stale("r1", 1)  # forgotten: at worst a stale task runs again


def test_fit_report_fails_largest_outputs_until_it_fits() -> None:
    big = "x" * 1000
    outcomes = [
        records.Outcome(op=records.STEP_COMPLETED, step_id=f"s{i}", name="s", output=big * (i + 1))
        for i in range(4)
    ]
    report = records.OutcomesReported("run", 1, outcomes, "w", 0)
    assert fit_report(report, 100_000) is report
    fitted = fit_report(report, 3000)
    assert len(encode(fitted)) <= 3000
    ops = {o.step_id: o.op for o in fitted.outcomes}
    assert ops["s0"] == records.STEP_COMPLETED
    assert ops["s3"] == records.STEP_FAILED
    failed = [o for o in fitted.outcomes if o.op == records.STEP_FAILED]
    assert all(o.error and o.error["name"] == "OutputTooLarge" and not o.retriable
               for o in failed)
