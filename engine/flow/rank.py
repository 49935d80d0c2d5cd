"""A run's rank in a gate's backlog: lower goes first.

rank = accepted time (ms) - clip(priority, -600 s, 600 s) · 1000. A priority of +600 puts
a run ahead of every run accepted up to ten minutes before it; it changes nothing when
there is no backlog. Equal ranks keep the order in which runs joined the backlog (the
gate's own sequence number, the key's tiebreak: see :mod:`engine.flow.backlog`).
"""

from __future__ import annotations

import math

PRIORITY_LIMIT_S = 600


def clip_priority(value: object) -> int:
    """A priority as the backlog counts it: whole seconds within ±600.

    The router evaluates ``Priority(run=...)`` and a failed expression counts as 0; so
    does anything that is not a finite number here (a string, None, a bool), so a bad
    value never stops a run. Fractions of a second are dropped (towards zero).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float):
        if not math.isfinite(value):
            return 0
        value = int(value)
    return max(-PRIORITY_LIMIT_S, min(PRIORITY_LIMIT_S, value))


def rank(accepted_ms: int, priority: object = 0) -> int:
    """The backlog rank of a run accepted at ``accepted_ms`` with ``priority`` seconds."""
    return accepted_ms - clip_priority(priority) * 1000
