"""The run fold's endings and their `stepstream/function.*` events, without Kafka."""

from __future__ import annotations

from engine.fold import apply
from tests.unit.fold.builders import of, report, requested
from tests.unit.memtables import MemTables
from topics.records import (
    FUNCTION_COMPLETED,
    Event,
    Outcome,
)


def test_runs_of_lifecycle_events_emit_none_of_their_own() -> None:
    t = MemTables()
    apply(t, requested(lifecycle_events=False))
    emits = apply(t, report(1, Outcome(op=FUNCTION_COMPLETED, output=None)))
    assert of(emits, Event) == []
