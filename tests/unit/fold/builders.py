"""Builders shared by the run fold's broker-free tests: a triggering event, a request, a
worker's report, a wait outcome."""

from __future__ import annotations

from typing import Any

from engine.fold import Emit, apply
from tests.unit.memtables import MemTables
from topics.records import (
    STEP_WAIT,
    Outcome,
    OutcomesReported,
    RunRequested,
    WaitRegistered,
)

TRIGGER = {"name": "billing/invoice.created", "data": {"invoice_id": 42}, "id": "E1",
           "ts": 1000}
PAID = {"name": "billing/invoice.paid", "data": {"invoice_id": 42}, "id": "E2", "ts": 3000}


def requested(run_id: str = "R1", ts: int = 1000, **kw: Any) -> RunRequested:
    kw.setdefault("dedupe_key", f"fn\x1fevent\x1f{run_id}")
    return RunRequested(run_id=run_id, fn_id="app-fn", app_id="app", partition_key="P",
                        event=TRIGGER, events=[TRIGGER], retries=2, backoff_base_ms=1000,
                        ts=ts, **kw)


def report(seq: int, *outcomes: Outcome, ts: int = 2000, run_id: str = "R1"
           ) -> OutcomesReported:
    return OutcomesReported(run_id=run_id, task_seq=seq, outcomes=list(outcomes),
                            worker="w", ts=ts)


def wait_outcome(until: int = 10_000, match: str | None = "data.invoice_id",
                 if_exp: str | None = None) -> Outcome:
    return Outcome(op=STEP_WAIT, step_id="paid", until_ms=until,
                   wait={"event": "billing/invoice.paid", "match": match, "if_exp": if_exp})


def of(emits: list[Emit], kind: type) -> list[Any]:
    return [e.record for e in emits if isinstance(e.record, kind)]


def waiting_run(t: MemTables) -> WaitRegistered:
    apply(t, requested())
    emits = apply(t, report(1, wait_outcome()))
    [reg] = of(emits, WaitRegistered)
    return reg

