"""Where a run's ``stepstream/function.*`` events go: decided at the processor's edge.

The run fold emits them for every ending (``engine/fold/endings.py: finish``) and stays
pure: what it emits depends on the run's records only, so replay and the state hash
are untouched. The processor then places each one, using the function registry:

- ``STEPSTREAM_LIFECYCLE_EVENTS=all``, or a registered trigger matches it (name and
  CEL filter, as the router would): on ``events``, as any event (the router starts the runs it triggers and forwards it to
  ``waits``).
- otherwise: straight to ``waits``, partition of its name, as the copy the router would
  have forwarded. Waits and cancel rules on that name are checked against it in the
  same log order as before, so a ``wait_for_event`` on ``stepstream/function.failed``
  still resolves. Whether any wait on the name is open cannot be known here without a
  race (that ``waits`` partition may belong to another engine process, and a
  ``wait.registered`` may be in flight to it), so this one record stays: one record
  instead of two, and no routing.
"""

from __future__ import annotations

from engine.fold import Emit
from engine.runtime.router import Registry
from topics.records import LIFECYCLE_EVENTS, Event


def place(emit: Emit, registry: Registry, mode: str) -> Emit:
    """``emit``, or the same lifecycle event sent to ``waits`` when nothing triggers on
    it (``mode`` is :attr:`topics.settings.Settings.lifecycle_events`)."""
    rec = emit.record
    if (emit.topic != "events" or mode == "all" or not isinstance(rec, Event)
            or rec.name not in LIFECYCLE_EVENTS
            or registry.triggers_on_engine_event(rec)):
        return emit
    return Emit("waits", rec.name, rec)
