"""Merging the answers of several engine processes into one (pure: no I/O, no clock).

Every engine answers from the ``runs`` partitions it owns and says which those were.
The merged answer is complete when the engines that answered cover every partition —
whether or not some other engine was silent (its partitions may have moved to one that
answered) — and otherwise carries a :class:`Partial` naming what is missing.

Answers are taken in engine order (sorted by engine id), so where two engines both hold
a run (for a moment during a rebalance) every engine picks the same copy, and the merged
answer is the same whichever engine merged it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.api.flow_state import KINDS, Found, flow_state
from engine.runstate import RunState


@dataclass(frozen=True, slots=True)
class Answer:
    """One engine's answer: its id, the ``runs`` partitions it read, and its result."""

    engine: str
    partitions: frozenset[int]
    result: Any


@dataclass(frozen=True, slots=True)
class Partial:
    """What a merged answer lacks: the engines that did not answer in time, and the
    ``runs`` partitions no answering engine read (their runs may exist but are absent)."""

    missing_engines: tuple[str, ...]
    missing_partitions: tuple[int, ...]

    def silent(self) -> str:
        """The engines that did not answer, for a message (none: partitions moving)."""
        return ", ".join(self.missing_engines) or "none (partitions being reassigned)"

    def fields(self) -> dict[str, Any]:
        """The fields an API answer carries when it is partial."""
        return {"partial": True, "missing_engines": list(self.missing_engines),
                "missing_partitions": list(self.missing_partitions)}


class Gathered(list[RunState]):
    """A merged list of run states; ``partial`` is None when it is complete."""

    def __init__(self, states: Iterable[RunState] = (), partial: Partial | None = None
                 ) -> None:
        super().__init__(states)
        self.partial = partial


def in_engine_order(answers: Iterable[Answer]) -> list[Answer]:
    """The answers sorted by engine id: the one order every engine merges in."""
    return sorted(answers, key=lambda a: a.engine)


def coverage(answers: Iterable[Answer], partitions: int,
             silent: Iterable[str]) -> Partial | None:
    """None if ``answers`` together read every one of ``partitions`` partitions, else
    what is missing; ``silent`` are the engines that were asked and did not answer."""
    covered: set[int] = set()
    for a in answers:
        covered |= a.partitions
    gaps = tuple(p for p in range(partitions) if p not in covered)
    if not gaps:
        return None
    return Partial(tuple(sorted(set(silent))), gaps)


def first_run(answers: Sequence[Answer]) -> RunState | None:
    """The run of the first answer (in engine order) that holds it."""
    for a in in_engine_order(answers):
        if a.result is not None:
            return a.result
    return None


def union_by_run_id(answers: Sequence[Answer]) -> list[RunState]:
    """Every run of every answer once (the first engine's copy), sorted by run id."""
    seen: dict[str, RunState] = {}
    for a in in_engine_order(answers):
        for state in a.result or ():
            seen.setdefault(state["run_id"], state)
    return [seen[k] for k in sorted(seen)]


def newest_first(answers: Sequence[Answer], limit: int) -> list[RunState]:
    """The first ``limit`` runs of pages that are each newest first (run ids are ULIDs,
    descending), merged newest first, each run once.

    Each engine was asked for ``limit`` runs below the same cursor, so the newest
    ``limit`` of the union are the newest ``limit`` of the whole cluster below it: the
    next page, asked with the last id as cursor, goes on exactly where this one ends.
    """
    if limit < 1:
        return []
    ordered = in_engine_order(answers)
    # heapq.merge keeps the pages' order for equal ids: the first engine's copy wins.
    merged = heapq.merge(*[a.result or () for a in ordered],
                         key=lambda s: s["run_id"], reverse=True)
    out: list[RunState] = []
    last: str | None = None
    for state in merged:
        if state["run_id"] == last:
            continue
        last = state["run_id"]
        out.append(state)
        if len(out) >= limit:
            break
    return out


def merged_flow_state(views: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One ``flow_state`` (:func:`engine.api.flow_state.flow_state`) from the
    ``flow_state`` of each engine's function view: their gates together, sorted as one
    engine sorts them, the partitions read summed, truncated if any was."""
    found = Found()
    partitions = 0
    for view in views:
        state = view.get("flow_state")
        if not isinstance(state, dict):
            continue
        for kind in KINDS:
            found.gates[kind].extend(state.get(kind) or [])
        partitions += int(state.get("partitions") or 0)
        found.truncated |= bool(state.get("truncated"))
    return flow_state(found, partitions)
