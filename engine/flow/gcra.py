"""Throttle and rate limit: GCRA over a stored theoretical arrival time, as Inngest does.

GCRA (the generic cell rate algorithm) keeps one number per key, the theoretical arrival
time ``tat``. With emission interval ``T`` and capacity ``C`` (the starts allowed at once
from rest), a start at ``now`` is allowed iff::

    max(tat, now) + T - C·T <= now          and then  tat := max(tat, now) + T

so ``C`` starts may go at once, then one every ``T``; the state is equivalent to none
once ``now >= tat``. Inngest's queue (``gcra.lua``) calls its script with
``maxBurst = limit + burst - 1`` and delay-variation tolerance ``(maxBurst + 1)·T``:

- **throttle** (``Throttle(limit, period, burst)``): ``T = period / limit`` and
  ``C = limit + burst``: ``limit + burst`` starts at once, then one every
  ``period / limit``; what may not start now waits in the gate's backlog until
  :attr:`Decision.next_ms` (Inngest's docs: limit 2, period 6 s, burst 1 — three start at
  once, then one every 3 s).
- **rate limit** (``RateLimit(limit, period)``): ``T = period / limit`` and ``C = limit``:
  ``limit`` starts at once, then one every ``period / limit``; what is over is skipped.
  Inngest's rate limiter is the same GCRA with ``C = limit // 10 + 1`` (``MaxBurst =
  limit / 10`` in ``pkg/execution/ratelimit``), which lets 1 of 10 simultaneous events
  through a limit of 3; here the whole ``limit`` goes at once, as its docs promise ("at
  most ``limit`` runs per ``period``").

Neither is a sliding-window count: over any window of length ``W`` at most
``C + ceil(W / T) - 1`` starts are allowed (for a throttle over one period,
``2·limit + burst - 1``), and the sustained rate is ``limit`` per ``period``.

Times are integer ms; ``T`` is kept exact (a fraction), so a limit of 3 per second drifts
by nothing over any number of starts. The state is ``[numerator, denominator]`` of ``tat``
in ms (msgpack-able, deterministic): pure, no clock, the same on replay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

# The stored state: ``tat`` in ms as [numerator, denominator]; None for a gate at rest.
State = list[int]


@dataclass(frozen=True, slots=True)
class Decision:
    """What a GCRA gate says about one start at ``now_ms``."""

    allowed: bool
    # The gate's state after the decision (unchanged when not allowed); None at rest.
    state: State | None
    # The earliest time the next start is allowed: after this one if it was allowed,
    # else this one's (a throttle's gate timer). Equal to ``now_ms`` if one may go now.
    next_ms: int
    # From this time on the state is equivalent to none: store it with this expiry.
    idle_ms: int


def throttle(state: State | None, now_ms: int, limit: int, period_ms: int,
             burst: int = 1) -> Decision:
    """A throttle gate (``limit`` starts per ``period_ms``, plus ``burst``) asked for a
    start at ``now_ms``. Not allowed: the run waits until ``next_ms`` (nothing dropped)."""
    _check(limit, period_ms)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        raise ValueError(f"a throttle's burst is an integer >= 0, not {burst!r}")
    return gcra(state, now_ms, Fraction(period_ms, limit), limit + burst)


def rate_limit(state: State | None, now_ms: int, limit: int, period_ms: int) -> Decision:
    """A rate-limit gate (``limit`` starts per ``period_ms``) asked for a start at
    ``now_ms``. Not allowed: the run is skipped; ``next_ms`` says when one could go."""
    _check(limit, period_ms)
    return gcra(state, now_ms, Fraction(period_ms, limit), limit)


def gcra(state: State | None, now_ms: int, emission: Fraction, capacity: int) -> Decision:
    """The algorithm itself: emission interval ``emission`` ms, ``capacity`` starts at
    once from rest (see the module's formula)."""
    now = Fraction(now_ms)
    tat = now if state is None else max(now, Fraction(state[0], state[1]))
    after = tat + emission
    allowed = after - capacity * emission <= now
    if allowed:
        tat = after
        state = [tat.numerator, tat.denominator]
    # Not allowed: tat is past now (so the state is not at rest) and stays as it was.
    next_ms = max(now_ms, math.ceil(tat - (capacity - 1) * emission))
    return Decision(allowed, state, next_ms, math.ceil(tat))


def _check(limit: int, period_ms: int) -> None:
    # Validated when the function is registered; checked again so a corrupt config
    # raises a clear error instead of dividing by zero inside the fold.
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"a limit is an integer >= 1, not {limit!r}")
    if isinstance(period_ms, bool) or not isinstance(period_ms, int) or period_ms < 1:
        raise ValueError(f"a period is a whole number of ms >= 1, not {period_ms!r}")
