"""The bookkeeping behind the engine's run metrics: which runs are not ended, what each
waits for, and which of a batch's changed runs began or ended. Pure (no I/O, no clock):
the processor's edge (:mod:`engine.observe.metrics`) feeds it the states a batch wrote.

Why a tally and not a scan: "runs waiting per reason" over every run of a partition
would read every state on each scrape. Instead each owned ``runs`` partition keeps a
map ``run id -> (function, reason)`` of its runs not ended (built once when the
partition is assigned, from its states), and every batch moves only the runs it
changed. Ended runs leave the map, so its size is the number of live runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.runstate import TERMINAL

# What a run that is not ended waits for (the ``reason`` label), from its ``waiting``.
WORKER = "worker"  # a task handed to workers, not reported yet: the scaling signal
REASONS = ("worker", "sleep", "retry", "event", "invoke", "concurrency", "throttle",
           "batch", "debounce", "starting")
_BY_KIND = {"task": WORKER, "event": "event", "invoke": "invoke", "slot": "concurrency",
            "throttle": "throttle"}


def reason_of(state: Mapping[str, Any]) -> str | None:
    """What the run waits for (one of :data:`REASONS`), or None once it has ended."""
    if state["status"] in TERMINAL:
        return None
    waiting = state.get("waiting")
    if waiting is None:
        return "starting"
    kind = waiting["kind"]
    if kind == "steps":
        # Several pauses at once (engine/fold/pending.py): counted by the first.
        held = list((state.get("pending") or {}).values())
        if not held:
            return "starting"
        waiting = held[0]
        kind = waiting["kind"]
    if kind == "timer":
        return "sleep" if waiting.get("reason") == "sleep" else "retry"
    return _BY_KIND.get(kind, "starting")


@dataclass(frozen=True, slots=True)
class Change:
    """What one batch did to one run: it began (``started``), ended (``ended`` is its
    status), or both; ``duration_s`` is from its request to its end."""

    fn_id: str
    started: bool
    ended: str | None
    duration_s: float | None = None
    # The ended run's state (its trace's root span is drawn from it).
    state: Mapping[str, Any] | None = None


@dataclass(slots=True)
class _Partition:
    runs: dict[str, tuple[str, str]] = field(default_factory=dict)
    gates: dict[bytes, tuple[str, str]] = field(default_factory=dict)
    timers: int = 0


class RunTally:
    """Runs not ended and open batch/debounce gates, per function and reason, over the
    ``runs`` partitions this process owns. Changed on the processor thread; read by
    :meth:`snapshot` from any thread."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}
        self._waiting: dict[tuple[str, str], int] = {}
        # One tuple per (function, reason): the maps share them instead of holding one
        # each (~60 bytes saved per run held).
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}
        self._lock = threading.Lock()

    def _pair(self, fn_id: str, reason: str) -> tuple[str, str]:
        key = (fn_id, reason)
        return self._pairs.setdefault(key, key)

    def _move(self, old: tuple[str, str] | None, new: tuple[str, str] | None) -> None:
        if old is not None:
            left = self._waiting[old] - 1
            if left:
                self._waiting[old] = left
            else:
                del self._waiting[old]
        if new is not None:
            self._waiting[new] = self._waiting.get(new, 0) + 1

    def assign(self, p: int, states: Iterable[Mapping[str, Any]],
               gates: Iterable[tuple[bytes, str, str]], timers: int) -> None:
        """Partition ``p`` is ours: ``states`` are all its runs, ``gates`` its open
        ``(key, function, "batch"|"debounce")`` gates, ``timers`` its timer count."""
        self.forget(p)
        part = _Partition(timers=timers)
        with self._lock:
            for state in states:
                reason = reason_of(state)
                if reason is not None:
                    pair = self._pair(state["fn_id"], reason)
                    part.runs[state["run_id"]] = pair
                    self._move(None, pair)
            for key, fn_id, kind in gates:
                pair = self._pair(fn_id, kind)
                part.gates[key] = pair
                self._move(None, pair)
            self._parts[p] = part

    def forget(self, p: int) -> None:
        """Partition ``p`` is not ours (revoked, or rebuilt from its topic)."""
        with self._lock:
            part = self._parts.pop(p, None)
            if part is not None:
                for pair in [*part.runs.values(), *part.gates.values()]:
                    self._move(pair, None)

    def apply(self, p: int, changed: Iterable[Mapping[str, Any]],
              existed: Callable[[str], bool]) -> list[Change]:
        """Take the states a batch of partition ``p`` wrote; return what began or
        ended. ``existed(run_id)`` says whether the run was stored before the batch:
        asked only of an ended run the tally does not hold, which either began and
        ended in this batch or had ended before."""
        part = self._parts.get(p)
        if part is None:
            return []
        out: list[Change] = []
        with self._lock:
            for state in changed:
                run_id, fn_id = state["run_id"], state["fn_id"]
                reason = reason_of(state)
                old = part.runs.get(run_id)
                if reason is not None:
                    pair = self._pair(fn_id, reason)
                    if old is not pair:
                        part.runs[run_id] = pair
                        self._move(old, pair)
                    if old is None:
                        out.append(Change(fn_id, True, None))
                    continue
                if old is not None:
                    del part.runs[run_id]
                    self._move(old, None)
                elif existed(run_id):
                    continue  # ended before this batch; touched again
                status = state["status"]
                out.append(Change(fn_id, old is None and status != "skipped", status,
                                  _duration_s(state), state))
        return out

    def gates_changed(self, p: int, opened: Iterable[tuple[bytes, str, str]],
                      closed: Iterable[bytes]) -> None:
        """Batch/debounce gates a batch of ``p`` wrote (open) or deleted (closed)."""
        part = self._parts.get(p)
        if part is None:
            return
        with self._lock:
            for key in closed:
                self._move(part.gates.pop(key, None), None)
            for key, fn_id, kind in opened:
                pair = self._pair(fn_id, kind)
                old = part.gates.get(key)
                if old is not pair:
                    part.gates[key] = pair
                    self._move(old, pair)

    def timers_changed(self, p: int, delta: int) -> None:
        part = self._parts.get(p)
        if part is not None:
            part.timers = max(0, part.timers + delta)

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[int, int]]:
        """``({(function, reason): runs waiting}, {partition: timers pending})``."""
        with self._lock:
            return dict(self._waiting), {p: part.timers for p, part in self._parts.items()}

    def held(self) -> int:
        """Runs held (not ended) over the owned partitions."""
        with self._lock:
            return sum(len(part.runs) for part in self._parts.values())


def _duration_s(state: Mapping[str, Any]) -> float | None:
    ended, requested = state.get("ended_at"), state.get("requested_at")
    if state["status"] == "skipped" or ended is None or requested is None:
        return None
    return max(0, ended - requested) / 1000
