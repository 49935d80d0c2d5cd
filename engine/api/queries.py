"""Read-only queries over the run state this engine process holds (for the HTTP API)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.api.flow_state import Found, flow_state, read_gates
from engine.api.function_views import function_view
from engine.api.views import RunFilter
from engine.clock import now_ms
from engine.flow import backlog, slots, throttle
from engine.runstate import RunState
from engine.store import keys
from engine.store.partition import PartitionStore, state_hash, unpack

if TYPE_CHECKING:
    from engine.runtime.processor import Processor

__all__ = ["Queries", "RunFilter", "list_runs"]

# Keys read per store while holding its lock: a long scan lets a partition revoke
# (which closes the store under that lock) in between chunks.
SCAN_CHUNK = 256


def list_runs(stores: Iterable[PartitionStore], limit: int, cursor: str | None = None,
              flt: RunFilter | None = None) -> list[RunState]:
    """Up to ``limit`` run states matching ``flt``, newest first (run ids are ULIDs, so
    key order is time order), merged across ``stores``, with run ids below ``cursor``
    (the last run id of the previous page). Scans on until ``limit`` runs match or the
    stores are exhausted, so a page is short only when no more runs match."""
    if limit < 1:
        return []
    scans = [store.runs_newest_first(cursor or None, SCAN_CHUNK) for store in stores]
    picked: list[RunState] = []
    last: str | None = None
    for run_id, raw in heapq.merge(*scans, key=lambda kv: kv[0], reverse=True):
        if run_id == last:  # the same run in two stores (never expected): once
            continue
        last = run_id
        state = unpack(raw)
        if flt is None or flt.matches(state):
            picked.append(state)
            if len(picked) >= limit:
                break
    return picked


class Queries:
    """Answers from the partitions this process owns. With several engine processes
    a run lives on the process that owns its partition; the API asks them all through
    :class:`engine.cluster.queries.ClusterQueries` (docs/architecture.md)."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def _stores(self) -> list[PartitionStore]:
        return self.processor.owned_stores()

    def get_run(self, run_id: str) -> RunState | None:
        for store in self._stores():
            with store.lock:
                if store.closed:
                    continue
                state = store.get_run(run_id)
                if state is not None:
                    _place_in_backlog(store, state)
            if state is not None:
                return state
        return None

    def runs_for_event(self, event_id: str) -> list[RunState]:
        out = []
        for store in self._stores():
            with store.lock:
                if store.closed:
                    continue
                for run_id in store.runs_for_event(event_id):
                    state = store.get_run(run_id)
                    if state is not None:
                        out.append(state)
        out.sort(key=lambda s: s["run_id"])
        return out

    def list_runs(self, limit: int, cursor: str | None = None,
                  flt: RunFilter | None = None) -> list[RunState]:
        """See :func:`list_runs`: newest first, older than ``cursor``, matching ``flt``."""
        return list_runs(self._stores(), limit, cursor, flt)

    def state_hash(self) -> str:
        return state_hash(self._stores())

    def functions(self) -> list[dict[str, Any]]:
        """Every registered function (:func:`engine.api.function_views.function_view`), by id."""
        # A copy: the processor thread adds and removes definitions meanwhile.
        registry = dict(self.processor.registry.functions)
        now = now_ms()
        return [function_view(f.definition, f.crons, now)
                for _, f in sorted(registry.items())]

    def function(self, fn_id: str) -> dict[str, Any] | None:
        """One registered function's view, or None if no such function is registered."""
        f = self.processor.registry.functions.get(fn_id)
        return None if f is None else function_view(f.definition, f.crons,
                                                    now_ms())

    def function_detail(self, fn_id: str) -> dict[str, Any] | None:
        """One function's view with ``flow_state``: its gates in every partition this
        process owns (:mod:`engine.api.flow_state`); None if it is not registered."""
        f = self.processor.registry.functions.get(fn_id)
        if f is None:
            return None
        now = now_ms()
        view = function_view(f.definition, f.crons, now)
        found = Found()
        read = 0
        for store in self._stores():
            # One store at a time under its lock: one committed state per partition,
            # and a revoke (which closes the store) waits at most one bounded read.
            with store.lock:
                if store.closed:
                    continue
                read_gates(store, fn_id, f.definition.flow, now, found)
                read += 1
            if found.truncated:
                break
        view["flow_state"] = flow_state(found, read)
        return view

    def applied(self) -> int:
        return self.processor.applied

    def consumer_lag(self) -> dict[str, Any] | None:
        """The engine's consumer lag (:meth:`engine.runtime.lag.LagMeter.report`)."""
        return self.processor.lag.report()


def _place_in_backlog(store: PartitionStore, state: RunState) -> None:
    """A queued run's place ("12 ahead"), read from the gate it waits for, and (behind a
    throttle) when the gate starts its next run. Under the store's lock: one committed
    state."""
    waiting: Any = state.get("waiting")
    if not isinstance(waiting, dict):
        return
    kind = waiting.get("kind")
    gate = str(waiting.get("gate"))
    if kind == "slot":
        waiting["ahead"] = slots.position(store, gate, state["run_id"])
    elif kind == "throttle":
        waiting["ahead"] = backlog.ahead(store, throttle.KIND, gate, state["run_id"])
        stored = store.get_value(keys.gate_key(throttle.KIND, gate)) or {}
        if isinstance(stored.get("timer_ms"), int):
            waiting["due_ms"] = stored["timer_ms"]
