"""Write ``history_v1.msgpack``: a deterministic ``runs`` history the replay hash pins.

Run once, on the engine before issue 8's move, to produce the fixture; the test
(``test_pinned_replay_hash.py``) only reads the file, so later engine changes cannot
change the history they are checked against. The script plays each scenario through
the fold to learn the ids the engine chose (task sequences, timer ids, child run ids),
exactly as a worker, the timer service and the matcher would.

    .venv/bin/python -m tests.unit.fold.make_history_v1
"""

from __future__ import annotations

from typing import Any

import msgpack

from engine.fold import Limits, Position, apply
from tests.unit.fold.test_pinned_replay_hash import FIXTURE, TASK_BYTES
from tests.unit.memtables import MemTables
from topics.codec import encode
from topics.records import (
    DEDUPE_WINDOW_MS,
    FUNCTION_COMPLETED,
    FUNCTION_FAILED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_INVOKE,
    STEP_SLEEP,
    STEP_WAIT,
    CancelRequested,
    InvokeFinished,
    InvokeRequested,
    Outcome,
    OutcomesReported,
    Record,
    RunRequested,
    RunStarted,
    Task,
    TimerFired,
    WaitRegistered,
    WaitResolved,
)

BIG = "x" * (80 * 1024)
ERR = {"name": "ValueError", "message": "boom", "stack": "trace"}


def _event(name: str, eid: str, ts: int, **data: Any) -> dict[str, Any]:
    return {"name": name, "data": data, "id": eid, "ts": ts}


class Play:
    def __init__(self) -> None:
        self.t = MemTables()
        self.records: list[Record] = []
        self.offset = 0
        self.last: list[Any] = []

    def add(self, rec: Record) -> list[Any]:
        self.last = [e.record for e in apply(self.t, rec, Position(0, self.offset),
                                             Limits(task_bytes=TASK_BYTES))]
        self.records.append(rec)
        self.offset += 1
        return self.last

    def seq(self, run_id: str) -> int:
        tasks = [r for r in self.last if isinstance(r, Task) and r.run_id == run_id]
        return int(tasks[-1].seq) if tasks else int(self.t.runs[run_id]["task_seq"])

    def waiting(self, run_id: str) -> dict[str, Any]:
        return dict(self.t.runs[run_id]["waiting"])


def requested(run_id: str, ts: int, **kw: Any) -> RunRequested:
    ev = kw.pop("event", _event("shop/order.created", "E-" + run_id, ts, order_id=7))
    kw.setdefault("dedupe_key", f"shop-fn\x1fevent\x1f{ev['id']}")
    return RunRequested(run_id=run_id, fn_id="shop-fn", app_id="shop", partition_key=run_id,
                        event=ev, events=[ev], retries=2, backoff_base_ms=1000, ts=ts, **kw)


def report(p: Play, run_id: str, ts: int, *outcomes: Outcome) -> list[Any]:
    return p.add(OutcomesReported(run_id=run_id, task_seq=p.seq(run_id),
                                  outcomes=list(outcomes), worker="w1", ts=ts))


def build() -> list[Record]:
    p = Play()
    # A: steps complete (one large output, by reference), a retried failure, a sleep,
    # then the function completes.
    p.add(requested("A", 1000))
    report(p, "A", 1100, Outcome(op=STEP_COMPLETED, step_id="small", output={"n": 1}),
           Outcome(op=STEP_COMPLETED, step_id="big", output=BIG))
    report(p, "A", 1200, Outcome(op=STEP_FAILED, step_id="charge", error=ERR))
    w = p.waiting("A")
    p.add(TimerFired(run_id="A", timer_id=w["timer_id"], due_ms=w["due_ms"],
                     ts=w["due_ms"] + 5))
    report(p, "A", w["due_ms"] + 50, Outcome(op=STEP_COMPLETED, step_id="charge", output=5))
    report(p, "A", w["due_ms"] + 60, Outcome(op=STEP_SLEEP, step_id="nap",
                                             until_ms=w["due_ms"] + 1000))
    w = p.waiting("A")
    p.add(TimerFired(run_id="A", timer_id=w["timer_id"], due_ms=w["due_ms"],
                     ts=w["due_ms"] + 1))
    report(p, "A", w["due_ms"] + 10, Outcome(op=FUNCTION_COMPLETED, output={"ok": True}))
    # A duplicate of A's request (dedupe key taken) and of a stale report.
    p.add(requested("A2", 20_000, event=_event("shop/order.created", "E-A", 1000,
                                                order_id=7)))
    p.add(OutcomesReported(run_id="A", task_seq=1, outcomes=[
        Outcome(op=STEP_COMPLETED, step_id="small", output=2)], worker="w2", ts=20_100))

    # B: waits for an event, which arrives (with a large payload, by reference).
    p.add(requested("B", 30_000, timeouts={"start_ms": 5000, "finish_ms": 600_000}))
    p.add(RunStarted(run_id="B", task_seq=1, worker="w1", ts=30_010))
    report(p, "B", 30_100, Outcome(op=STEP_WAIT, step_id="paid", until_ms=90_000,
                                   wait={"event": "billing/paid", "match": "data.order_id",
                                         "if_exp": None}))
    reg = next(r for r in p.last if isinstance(r, WaitRegistered))
    p.add(WaitResolved(run_id="B", wait_id=reg.wait_id, kind="step",
                       event=_event("billing/paid", "E-PAID", 31_000, order_id=7, blob=BIG),
                       ts=31_000))
    report(p, "B", 31_100, Outcome(op=FUNCTION_FAILED, retriable=False, error=ERR))

    # C: waits, and the wait times out.
    p.add(requested("C", 40_000))
    report(p, "C", 40_100, Outcome(op=STEP_WAIT, step_id="w", until_ms=45_000,
                                   wait={"event": "x/never", "match": None, "if_exp": None}))
    w = p.waiting("C")
    p.add(TimerFired(run_id="C", timer_id=w["timer_id"], due_ms=w["due_ms"], ts=45_001))

    # D: invokes a child (E), which completes and reports back.
    p.add(requested("D", 50_000))
    report(p, "D", 50_100, Outcome(op=STEP_INVOKE, step_id="child", until_ms=None,
                                   invoke={"function_id": "shop-child", "data": {"n": 2}}))
    inv = next(r for r in p.last if isinstance(r, InvokeRequested))
    child = p.waiting("D")["child_run_id"]
    ev = _event("stepstream/function.invoked", inv.event_id, 50_100, **inv.data)
    p.add(RunRequested(run_id=child, fn_id="shop-child", app_id="shop", partition_key=child,
                       event=ev, events=[ev], retries=0, backoff_base_ms=1000,
                       parent=inv.parent, ts=50_200))
    report(p, child, 50_300, Outcome(op=FUNCTION_COMPLETED, output={"sum": 3}))
    fin = next(r for r in p.last if isinstance(r, InvokeFinished))
    p.add(fin)
    report(p, "D", 50_500, Outcome(op=FUNCTION_COMPLETED, output=None))

    # F: cancel rules, cancelled by an event; G: cancelled by the API.
    rules = [{"event": "shop/order.voided", "match": "event.data.order_id", "if_exp": None,
              "timeout_ms": 60_000}]
    p.add(requested("F", 60_000, cancel=rules))
    reg = next(r for r in p.last if isinstance(r, WaitRegistered))
    p.add(WaitResolved(run_id="F", wait_id=reg.wait_id, kind="cancel",
                       event=_event("shop/order.voided", "E-VOID", 61_000, order_id=7),
                       ts=61_000))
    p.add(requested("G", 62_000))
    p.add(CancelRequested(run_id="G", by={"kind": "api", "reason": "test"}, ts=62_500))

    # H: the finish deadline passes while it runs.
    p.add(requested("H", 70_000, timeouts={"start_ms": None, "finish_ms": 2000}))
    deadline = next(t for t in sorted(p.t.timers) if t[1] == "H")
    p.add(TimerFired(run_id="H", timer_id=deadline[2], due_ms=deadline[0], ts=deadline[0]))

    # Cron: two ticks, one fired twice, one older.
    cron = {"cron": "* * * * *", "tick_ms": 120_000}
    p.add(requested("K1", 120_001, cron=cron, dedupe_key=None))
    p.add(requested("K1b", 120_002, cron=cron, dedupe_key=None))
    p.add(requested("K0", 120_003, cron={**cron, "tick_ms": 60_000}, dedupe_key=None))
    p.add(requested("K2", 180_001, cron={**cron, "tick_ms": 180_000}, dedupe_key=None))

    # A dedupe key reused after its window has passed starts a new run, and the
    # expiry of the old keys is part of the state.
    p.add(requested("A3", 1000 + DEDUPE_WINDOW_MS + 1,
                    event=_event("shop/order.created", "E-A", 1000, order_id=7)))
    return p.records


def main() -> None:
    FIXTURE.write_bytes(msgpack.packb([encode(r) for r in build()], use_bin_type=True))
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
