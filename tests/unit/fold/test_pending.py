"""Several pauses at once (engine/fold/pending.py), without Kafka: parallel lines waiting
on events, child runs and timers, each resolved on its own."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.api.views import run_view, waiting_text
from engine.fold import apply
from engine.observe.tally import reason_of
from tests.unit.fold.builders import PAID, of, report, requested, wait_outcome
from tests.unit.fold.test_outcomes import done, failed
from tests.unit.memtables import MemTables
from topics.records import (
    FUNCTION_COMPLETED,
    STEP_INVOKE,
    STEP_SLEEP,
    STEP_WAIT,
    CancelRequested,
    InvokeFinished,
    InvokeRequested,
    Outcome,
    OutcomesReported,
    Record,
    Task,
    TimerFired,
    WaitCleared,
    WaitRegistered,
    WaitResolved,
)


def invoke(step_id: str, until: int | None = None) -> Outcome:
    return Outcome(op=STEP_INVOKE, step_id=step_id, until_ms=until,
                   invoke={"function_id": "app-child", "data": {"n": step_id}})


def progress(seq: int, *outcomes: Outcome, ts: int = 2000) -> OutcomesReported:
    return OutcomesReported(run_id="R1", task_seq=seq, outcomes=list(outcomes), worker="w",
                            ts=ts, progress=True)


def fan_out(t: MemTables, *steps: str, until: int | None = None) -> dict[str, str]:
    """Request R1 and report invokes of ``steps`` from task 1; their child run ids."""
    apply(t, requested())
    emits = apply(t, report(1, *(invoke(s, until) for s in steps)))
    assert of(emits, Task) == []  # nothing to do before a child ends
    assert len(of(emits, InvokeRequested)) == len(steps)
    return {s: e["child_run_id"] for s, e in t.runs["R1"]["pending"].items()
            if e["kind"] == "invoke"}


def finished(child: dict[str, str], step_id: str, ts: int, output: Any = None,
             error: dict[str, Any] | None = None) -> InvokeFinished:
    return InvokeFinished(run_id="R1", step_id=step_id, child_run_id=child[step_id],
                          output=output, error=error, ts=ts)


def test_each_child_resolves_its_own_step_and_hands_the_run_over() -> None:
    t = MemTables()
    child = fan_out(t, "c0", "c1", "c2")
    assert t.runs["R1"]["waiting"] == {"kind": "steps", "step_ids": ["c0", "c1", "c2"]}
    [task] = of(apply(t, finished(child, "c1", 3000, output=10)), Task)
    assert task.steps == {"c1": {"data": 10}}
    # The worker meets c0 and c2 again: they stay pending, no child is asked for twice.
    emits = apply(t, report(task.seq, invoke("c0"), invoke("c2"), ts=3100))
    assert emits == [] and t.runs["R1"]["waiting"]["kind"] == "steps"
    # A failed child fails its step only.
    error = {"name": "ValueError", "message": "bad", "stack": ""}
    [task] = of(apply(t, finished(child, "c0", 4000, error=error)), Task)
    assert task.steps == {"c1": {"data": 10}, "c0": {"error": error}}
    assert apply(t, report(task.seq, invoke("c2"), ts=4050)) == []
    [task] = of(apply(t, finished(child, "c2", 4100, output=30)), Task)
    assert list(task.steps) == ["c1", "c0", "c2"]  # in the order they were recorded
    assert "pending" not in t.runs["R1"]
    apply(t, report(task.seq, Outcome(op=FUNCTION_COMPLETED, output=[1]), ts=5000))
    assert t.runs["R1"]["status"] == "completed"
    # A duplicate end changes nothing.
    assert apply(t, finished(child, "c2", 6000, output=30)) == []


def test_an_end_while_a_task_is_out_hands_over_after_its_report() -> None:
    t = MemTables()
    child = fan_out(t, "c0", "c1", "c2")
    [task] = of(apply(t, finished(child, "c0", 3000, output=0)), Task)
    # c1 ends while the worker executes task 2: nothing is dispatched yet.
    assert apply(t, finished(child, "c1", 3050, output=1)) == []
    # The worker did not see c1: it reports c1 and c2 again; the run goes again at once.
    [again] = of(apply(t, report(task.seq, invoke("c1"), invoke("c2"), ts=3100)), Task)
    assert again.steps == {"c0": {"data": 0}, "c1": {"data": 1}}
    assert apply(t, report(again.seq, invoke("c2"), ts=3200)) == []


def test_a_wait_next_to_a_completed_step_lets_that_line_go_on() -> None:
    t = MemTables()
    apply(t, requested())
    emits = apply(t, progress(1, done("a", 1), wait_outcome(until=60_000)))
    [reg] = of(emits, WaitRegistered)
    [task] = of(emits, Task)  # the line of "a" goes on while the wait is registered
    assert task.steps == {"a": {"data": 1}}
    assert list(t.runs["R1"]["pending"]) == ["paid"]
    emits = apply(t, progress(task.seq, wait_outcome(until=70_000), done("b", 2), ts=2500))
    assert of(emits, WaitRegistered) == []  # registered once, with its first timeout
    assert (60_000, "R1", "wait:1/paid") in t.timers
    [task] = of(emits, Task)
    # The line of "a" and "b" finished: only the wait is reported, and the run waits.
    emits = apply(t, report(task.seq, wait_outcome(), ts=2600))
    assert emits == []
    [task] = of(apply(t, WaitResolved(run_id="R1", wait_id=reg.wait_id, kind="step",
                                      event=PAID, ts=3000)), Task)
    assert task.steps["paid"] == {"data": PAID}
    assert not any(k[1] == "R1" for k in t.timers)


def test_timeouts_stay_per_step() -> None:
    t = MemTables()
    apply(t, requested())
    apply(t, report(1, invoke("slow", until=5000), invoke("fast"),
                    wait_outcome(until=8000)))
    assert {k[2] for k in t.timers if k[1] == "R1"} == {"invoke:1/slow", "wait:1/paid"}
    assert apply(t, TimerFired(run_id="R1", timer_id="invoke:1/slow", due_ms=5000,
                               ts=4999)) == []  # never early
    [task] = of(apply(t, TimerFired(run_id="R1", timer_id="invoke:1/slow", due_ms=5000,
                                    ts=5000)), Task)
    assert task.steps["slow"]["error"]["name"] == "InvokeTimeoutError"
    apply(t, report(task.seq, invoke("fast"), wait_outcome(), ts=5100))
    emits = apply(t, TimerFired(run_id="R1", timer_id="wait:1/paid", due_ms=8000, ts=8000))
    [task] = of(emits, Task)
    assert task.steps["paid"] == {"data": None} and len(of(emits, WaitCleared)) == 1
    assert list(t.runs["R1"]["pending"]) == ["fast"]


def test_a_retry_holds_every_hand_over_until_it_is_due() -> None:
    t = MemTables()
    apply(t, requested())
    emits = apply(t, progress(1, done("a"), failed("b", after=9000), wait_outcome()))
    assert of(emits, Task) == []  # the worker would run "b" again before its backoff
    [reg] = of(emits, WaitRegistered)
    assert apply(t, WaitResolved(run_id="R1", wait_id=reg.wait_id, kind="step", event=PAID,
                                 ts=3000)) == []
    [task] = of(apply(t, TimerFired(run_id="R1", timer_id="retry:1/b", due_ms=9000,
                                    ts=9000)), Task)
    assert task.step_attempts == {"b": 1} and set(task.steps) == {"a", "paid"}


def test_sleeps_next_to_an_invoke_wake_on_their_own() -> None:
    t = MemTables()
    apply(t, requested())
    apply(t, report(1, Outcome(op=STEP_SLEEP, step_id="nap", until_ms=4000), invoke("c")))
    [task] = of(apply(t, TimerFired(run_id="R1", timer_id="sleep:1/nap", due_ms=4000,
                                    ts=4000)), Task)
    assert task.steps == {"nap": {"data": None}}
    # Reported again while the task is out, a sleep already done changes nothing.
    assert apply(t, report(task.seq, invoke("c"), ts=4100)) == []


def test_cancel_and_the_end_clear_everything_still_pending() -> None:
    for ending in ("cancel", "complete"):
        t = MemTables()
        apply(t, requested())
        emits = apply(t, progress(1, done("a"), invoke("c", until=9000), wait_outcome(),
                                  Outcome(op=STEP_SLEEP, step_id="nap", until_ms=7000)))
        [task] = of(emits, Task)
        if ending == "cancel":
            emits = apply(t, CancelRequested(run_id="R1", by={"kind": "api"}, ts=3000))
        else:  # a RACE won by "a": the function ends with the others pending
            emits = apply(t, report(task.seq, Outcome(op=FUNCTION_COMPLETED, output=1),
                                    ts=3000))
        state = t.runs["R1"]
        assert state["status"] == ("cancelled" if ending == "cancel" else "completed")
        assert "pending" not in state and state["waiting"] is None
        assert [c.wait_id for c in of(emits, WaitCleared)] == ["R1/paid"]
        assert not any(k[1] == "R1" for k in t.timers), t.timers
        # The child goes on; its end finds the run ended.
        child = next(e["detail"]["child_run_id"] for e in state["timeline"]
                     if e["type"] == "invoke.requested")
        assert apply(t, InvokeFinished(run_id="R1", step_id="c", child_run_id=child,
                                       output=1, error=None, ts=4000)) == []


def history() -> list[Record]:
    """A run of parallel pauses, from request to end, as the fold's records."""
    t = MemTables()
    child = fan_out(t, "c0", "c1", until=50_000)
    return [requested(), report(1, invoke("c0", 50_000), invoke("c1", 50_000)),
            finished(child, "c1", 3000, output=1),
            report(2, invoke("c0", 60_000), ts=3100),
            finished(child, "c0", 4000, output=0),
            report(3, Outcome(op=FUNCTION_COMPLETED, output=[0, 1]), ts=5000)]


def test_replaying_the_same_records_gives_the_same_state() -> None:
    snapshots = []
    for _ in range(2):
        t = MemTables()
        for rec in history():
            apply(t, rec)
        assert t.runs["R1"]["status"] == "completed"
        snapshots.append(t.snapshot())
    assert snapshots[0] == snapshots[1]


def test_views_and_metrics_name_several_pauses() -> None:
    t = MemTables()
    fan_out(t, *(f"c{n}" for n in range(7)))
    state = t.runs["R1"]
    assert reason_of(state) == "invoke"
    text = waiting_text(run_view(dict(state))["waiting"])
    assert text == "waiting for 7 parallel steps (c0, c1, c2, c3, c4 and 2 more)"


# A random but valid history of parallel pauses for two runs, as workers, the matcher,
# children and the timer service would write it: replaying it into fresh tables gives
# the same bytes, re-delivering it changes nothing, and no run is ever left waiting on
# nothing.
moves = st.lists(st.tuples(st.integers(0, 1), st.sampled_from(
    ["report", "progress", "resolve", "dup", "fire", "finish", "cancel"]),
    st.integers(0, 7)), max_size=40)


def drive(history: list[tuple[int, str, int]]) -> tuple[MemTables, list[Record]]:
    t = MemTables()
    log: list[Record] = []
    now = 1000

    def feed(rec: Record) -> None:
        log.append(rec)
        apply(t, rec)
        check(t)

    for r in range(2):
        feed(requested(f"R{r}", ts=now))
    for n, (r, op, k) in enumerate(history):
        now += 100
        run_id = f"R{r}"
        state = t.runs[run_id]
        waiting, held = state["waiting"], state.get("pending") or {}
        if state["status"] != "running" or waiting is None:
            continue
        if op in ("resolve", "dup") and held:
            key = sorted(held)[k % len(held)]
            rec = resolution(run_id, key, held[key], now)
            feed(rec)
            if op == "dup":
                feed(rec)
        elif op == "fire" and waiting["kind"] == "timer":
            feed(TimerFired(run_id=run_id, timer_id=waiting["timer_id"],
                            due_ms=waiting["due_ms"], ts=max(now, waiting["due_ms"])))
        elif op == "cancel":
            feed(CancelRequested(run_id=run_id, by={"kind": "api"}, ts=now))
        elif waiting["kind"] == "task" and op in ("report", "progress", "finish"):
            feed(OutcomesReported(run_id=run_id, task_seq=waiting["seq"], worker="w", ts=now,
                                  outcomes=pass_of(state, op, k, n, now),
                                  progress=op == "progress"))
    return t, log


def pass_of(state: Any, op: str, k: int, n: int, now: int) -> list[Outcome]:
    """What a worker reports: the pauses still unresolved again, then new steps."""
    if op == "finish":
        return [Outcome(op=FUNCTION_COMPLETED, output=n)]
    again = [Outcome(op=STEP_SLEEP, step_id=s, until_ms=now) if e["kind"] == "timer"
             else invoke(s) if e["kind"] == "invoke"
             else Outcome(op=STEP_WAIT, step_id=s, until_ms=now + 900, wait={"event": "e"})
             for s, e in (state.get("pending") or {}).items() if s]
    new = [invoke(f"i{n}", until=now + 700) if k & 1 else None,
           Outcome(op=STEP_WAIT, step_id=f"w{n}", until_ms=now + 500,
                   wait={"event": "e"}) if k & 2 else None,
           Outcome(op=STEP_SLEEP, step_id=f"s{n}", until_ms=now + 300) if k & 4 else None,
           done(f"d{n}", n) if op == "progress" or not k else None]
    return again + [o for o in new if o is not None]


def resolution(run_id: str, key: str, entry: Any, now: int) -> Record:
    if entry["kind"] == "event":
        return WaitResolved(run_id=run_id, wait_id=entry["wait_id"], kind="step",
                            event=PAID, ts=now)
    if entry["kind"] == "invoke":
        return InvokeFinished(run_id=run_id, step_id=key, child_run_id=entry["child_run_id"],
                              output=now, error=None, ts=now)
    return TimerFired(run_id=run_id, timer_id=entry["timer_id"], due_ms=entry["due_ms"],
                      ts=max(now, entry["due_ms"]))


def check(t: MemTables) -> None:
    for run_id, state in t.runs.items():
        timers = {k[2] for k in t.timers if k[1] == run_id}
        held = state.get("pending") or {}
        if state["status"] in ("completed", "failed", "cancelled"):
            assert not held and not timers, (run_id, held, timers)
            continue
        kind = (state["waiting"] or {}).get("kind")
        assert kind in ("task", "timer", "event", "invoke", "steps"), state["waiting"]
        if kind == "steps":
            assert held, "waiting on no step"
        if held:
            assert kind in ("task", "steps")
        for entry in held.values():
            assert entry["timer_id"] is None or entry["timer_id"] in timers


@settings(max_examples=150, deadline=None)
@given(moves)
def test_replay_of_parallel_pauses_gives_identical_state(
        history: list[tuple[int, str, int]]) -> None:
    live, log = drive(history)
    replayed = MemTables()
    for rec in log:
        apply(replayed, rec)
    assert replayed.snapshot() == live.snapshot()
    if any(op == "cancel" for _, op, _ in history):
        # A cancelled run notes a repeated report of its last task as ignored: that
        # note, not a state change, is what re-delivery would add (the batch layer's
        # offsets keep it from happening).
        return
    for rec in log:
        apply(replayed, rec)
    assert replayed.snapshot() == live.snapshot()
