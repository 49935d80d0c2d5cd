"""The engine's metric bookkeeping (no broker): the pure tally of runs not ended, and
the processor's edge over a real RocksDB store and the real fold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from engine.observe.metrics import EngineMetrics, metrics_enabled, reason_class
from engine.observe.tally import RunTally, reason_of
from engine.runtime.batch import apply_batch
from engine.store.partition import PartitionStore
from tests.unit.runtime.test_apply import SETTINGS, msgs, requested
from topics.ids import run_span_id_for, trace_id_for
from topics.records import (
    FUNCTION_COMPLETED,
    STEP_SLEEP,
    DeadLetter,
    Outcome,
    OutcomesReported,
)


def state(run_id: str, status: str = "running", waiting: Any = None, fn: str = "f",
          **kw: Any) -> dict[str, Any]:
    return {"run_id": run_id, "fn_id": fn, "status": status, "waiting": waiting,
            "requested_at": 1000, "ended_at": None, **kw}


TASK = {"kind": "task", "seq": 1}


def test_reasons_name_what_a_run_waits_for() -> None:
    assert reason_of(state("r", waiting=TASK)) == "worker"
    assert reason_of(state("r", waiting={"kind": "timer", "reason": "sleep"})) == "sleep"
    assert reason_of(state("r", waiting={"kind": "timer", "reason": "retry"})) == "retry"
    assert reason_of(state("r", waiting={"kind": "slot"})) == "concurrency"
    assert reason_of(state("r", status="queued", waiting={"kind": "throttle"})) == "throttle"
    assert reason_of(state("r", waiting={"kind": "event"})) == "event"
    assert reason_of(state("r", status="queued")) == "starting"
    for ended in ("completed", "failed", "cancelled", "skipped"):
        assert reason_of(state("r", status=ended, waiting=TASK)) is None


def test_a_run_moves_between_reasons_and_leaves_when_it_ends() -> None:
    tally = RunTally()
    tally.assign(0, [state("old", waiting={"kind": "event"}),
                     state("done", status="completed")], [], timers=2)
    assert tally.snapshot() == ({("f", "event"): 1}, {0: 2})
    asked: list[str] = []

    def existed(run_id: str) -> bool:
        asked.append(run_id)
        return run_id == "done"

    changes = tally.apply(0, [state("new", waiting=TASK), state("old", waiting=TASK)], existed)
    assert [(c.fn_id, c.started, c.ended) for c in changes] == [("f", True, None)]
    assert tally.snapshot()[0] == {("f", "worker"): 2}
    ended = state("old", status="completed", ended_at=3500)
    changes = tally.apply(0, [ended, state("done", status="completed", ended_at=9000)],
                          existed)
    # "old" ended here; "done" had ended before (the store had it): not counted again.
    assert [(c.fn_id, c.started, c.ended, c.duration_s) for c in changes] == [
        ("f", False, "completed", 2.5)]
    assert asked == ["done"]
    assert tally.snapshot()[0] == {("f", "worker"): 1}
    assert tally.held() == 1


def test_a_run_begun_and_ended_in_one_batch_counts_once_each() -> None:
    tally = RunTally()
    tally.assign(3, [], [], timers=0)
    changes = tally.apply(3, [state("fast", status="completed", ended_at=1200),
                              state("skip", status="skipped", ended_at=1000)],
                          lambda _run_id: False)
    assert [(c.started, c.ended) for c in changes] == [(True, "completed"), (False, "skipped")]
    assert changes[1].duration_s is None
    assert tally.snapshot() == ({}, {3: 0})


def test_forgetting_a_partition_takes_its_runs_and_gates_out() -> None:
    tally = RunTally()
    tally.assign(0, [state("a", waiting=TASK)], [(b"g/batch/f", "f", "batch")], timers=1)
    tally.assign(1, [state("b", waiting=TASK, fn="g")], [], timers=0)
    tally.gates_changed(1, [(b"g/debounce/g", "g", "debounce")], [])
    assert tally.snapshot()[0] == {("f", "worker"): 1, ("f", "batch"): 1, ("g", "worker"): 1,
                                   ("g", "debounce"): 1}
    tally.forget(0)
    assert tally.snapshot() == ({("g", "worker"): 1, ("g", "debounce"): 1}, {1: 0})
    tally.gates_changed(1, [], [b"g/debounce/g"])
    # A batch of a partition not (or no longer) ours changes nothing.
    assert tally.apply(0, [state("x", waiting=TASK)], lambda _r: False) == []
    assert tally.snapshot() == ({("g", "worker"): 1}, {1: 0})


def test_dead_letter_reasons_fall_in_a_few_classes() -> None:
    assert reason_class("undecodable: bad msgpack") == "undecodable"
    assert reason_class("not applicable: wrong topic") == "not_applicable"
    assert reason_class("fold error: KeyError: 'x'") == "fold_error"
    assert reason_class("emitted record of 9 bytes is over ...") == "too_large"
    assert reason_class("something new") == "other"
    assert not metrics_enabled({"STEPSTREAM_METRICS": "0"})
    assert metrics_enabled({})


def test_trace_ids_derive_from_the_run_id() -> None:
    assert trace_id_for("R1") == trace_id_for("R1") != trace_id_for("R2")
    assert len(trace_id_for("R1")) == 32 and int(trace_id_for("R1"), 16) > 0
    assert len(run_span_id_for("R1")) == 16 and run_span_id_for("R1") != trace_id_for("R1")[:16]


def scrape(m: EngineMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(m.render().decode()) for s in fam.samples}


def fold_batch(store: PartitionStore, m: EngineMetrics, *records: Any, live: bool = True
               ) -> None:
    """What the processor does with one batch: fold, count at the edge, write."""
    result = apply_batch(store, msgs(*records, start=store.next_offset()), SETTINGS,
                         live_from=0, now_ms=0)
    m.batch_written("runs", 0, result.view, result.applied, live)
    result.view.commit(result.next_offset)


def done(run_id: str, seq: int, op: str, ts: int, **kw: Any) -> OutcomesReported:
    return OutcomesReported(run_id=run_id, task_seq=seq, worker="w", ts=ts,
                            outcomes=[Outcome(op=op, **kw)])


def test_the_edge_counts_runs_from_the_batches_the_fold_wrote(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "runs-0")
    m = EngineMetrics(lag=lambda: [("runs", 0, 7)])
    m.assigned(0, store)
    fold_batch(store, m, requested("R1"), requested("R2"))
    fn = "shop-process-order"
    got = scrape(m)
    assert got[("stepstream_worker_backlog", frozenset({("function", fn)}))] == 2
    assert got[("stepstream_runs_started_total", frozenset({("function", fn)}))] == 2
    assert got[("stepstream_consumer_lag", frozenset({("topic", "runs"), ("partition", "0")}))
               ] == 7
    # R1 sleeps (a timer), R2 completes; then R2's run is touched by nothing new.
    fold_batch(store, m, done("R1", 1, STEP_SLEEP, 2000, step_id="nap", until_ms=60_000),
               done("R2", 1, FUNCTION_COMPLETED, 3000, output=1))
    got = scrape(m)
    assert got[("stepstream_runs_waiting", frozenset({("function", fn), ("reason", "sleep")}))
               ] == 1
    assert ("stepstream_worker_backlog", frozenset({("function", fn)})) not in got
    assert got[("stepstream_runs_ended_total",
                frozenset({("function", fn), ("status", "completed")}))] == 1
    assert got[("stepstream_run_duration_seconds_sum", frozenset({("function", fn)}))] == 2.0
    assert got[("stepstream_timers_pending", frozenset({("partition", "0")}))] == 1
    assert got[("stepstream_records_folded_total", frozenset({("topic", "runs")}))] == 4
    # A repeated report for the ended run is ignored by the fold and not counted again.
    fold_batch(store, m, done("R2", 1, FUNCTION_COMPLETED, 3100, output=1))
    assert scrape(m)[("stepstream_runs_ended_total",
                      frozenset({("function", fn), ("status", "completed")}))] == 1

    # A new owner builds the same gauges from the store alone.
    again = EngineMetrics()
    again.assigned(0, store)
    assert again.tally.snapshot() == m.tally.snapshot()
    # Records folded again to restore state change the gauges, not the counters.
    fold_batch(store, again, requested("R3"), live=False)
    got = scrape(again)
    assert got[("stepstream_worker_backlog", frozenset({("function", fn)}))] == 1
    assert ("stepstream_runs_started_total", frozenset({("function", fn)})) not in got
    again.dead_letter(DeadLetter(source_topic="t1.runs", partition=0, offset=1, key=None,
                                 value=b"", reason="undecodable: x", ts=0))
    assert scrape(again)[("stepstream_dead_letters_total",
                          frozenset({("source", "runs"), ("reason", "undecodable")}))] == 1
    store.close()


def test_metrics_off_counts_nothing(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "runs-0")
    m = EngineMetrics(enabled=False)
    m.assigned(0, store)
    fold_batch(store, m, requested("R1"))
    assert not any(name.startswith("stepstream_runs") for name, _ in scrape(m))
    store.close()


def test_the_run_view_and_runs_show_name_the_trace() -> None:
    from rich.console import Console

    from engine.api.views import run_view, timeline_text

    view = run_view({"run_id": "01RUN", "fn_id": "f", "status": "completed",
                     "requested_at": 1000, "ended_at": 2000})
    assert view["trace_id"] == trace_id_for("01RUN")
    console = Console(width=120, record=True)
    console.print(timeline_text(view))
    assert f"trace {trace_id_for('01RUN')}" in console.export_text()
