"""Read-only queries over the run state this engine process holds (for the HTTP API)."""

from __future__ import annotations

from typing import Any

from engine.processor import Processor
from engine.state import RUN, PartitionStore, decode_state, state_hash


class Queries:
    """Answers from the partitions this process owns. With several engine processes
    a run lives on the process that owns its partition (docs/architecture.md)."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def _stores(self) -> list[PartitionStore]:
        return self.processor.owned_stores()

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        for store in self._stores():
            with store.lock:
                if store.closed:
                    continue
                state = store.get_run(run_id)
            if state is not None:
                return state
        return None

    def runs_for_event(self, event_id: str) -> list[dict[str, Any]]:
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

    def list_runs(self, limit: int, before: str | None = None) -> list[dict[str, Any]]:
        """Newest first (run ids are ULIDs, so key order is time order)."""
        upper = RUN + (before.encode() if before else b"\xff")
        picked: list[dict[str, Any]] = []
        for store in self._stores():
            with store.lock:
                if store.closed:
                    continue
                it = store.db.iter()
                it.seek_for_prev(upper)
                n = 0
                while it.valid() and n < limit:
                    key = it.key()
                    if not key.startswith(RUN):
                        break
                    if key != upper:
                        picked.append(decode_state(it.value()))
                        n += 1
                    it.prev()
        picked.sort(key=lambda s: s["run_id"], reverse=True)
        return picked[:limit]

    def state_hash(self) -> str:
        return state_hash(self._stores())

    def functions(self) -> list[dict[str, Any]]:
        return [{"id": fn_id, "app_id": f.definition.app_id, "name": f.definition.name,
                 "triggers": f.definition.triggers, "retries": f.definition.retries}
                for fn_id, f in sorted(self.processor.registry.functions.items())]

    def applied(self) -> int:
        return self.processor.applied
