"""Concurrency slots: the limit, the backlog's order, idempotency, limit changes."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.flow import slots
from engine.flow.rank import rank
from engine.store import keys
from engine.store.memory import MemTables
from engine.store.partition import PartitionStore
from engine.store.view import BatchView

GATE = "fn-1/acct-7"


def test_grants_up_to_the_limit_then_queues_and_a_release_grants_the_head() -> None:
    t = MemTables()
    assert [slots.claim(t, GATE, 2, r, 1, rank(1000 + i)) for i, r in enumerate("ABCD")] \
        == [True, True, False, False]
    assert (slots.holders(t, GATE), slots.queued(t, GATE)) == (2, 2)
    assert [slots.position(t, GATE, r) for r in "ABCD"] == [0, 0, 0, 1]
    assert slots.release(t, GATE, "A", 1) == [("C", 1)]
    assert slots.holds(t, GATE, "C") and not slots.holds(t, GATE, "A")
    assert slots.position(t, GATE, "D") == 0


def test_a_newcomer_never_passes_a_queued_run() -> None:
    t = MemTables()
    assert slots.claim(t, GATE, 1, "A", 1, 0)
    assert not slots.claim(t, GATE, 1, "B", 1, 10)
    # A higher limit arrives with C's claim: there is room, but B is queued, so C waits
    # behind B, and B gets the next slot.
    assert not slots.claim(t, GATE, 2, "C", 1, 20)
    assert slots.release(t, GATE, "A") == [("B", 1), ("C", 1)]
    assert (slots.holders(t, GATE), slots.queued(t, GATE)) == (2, 0)


def test_the_backlog_leaves_in_rank_order_and_equal_ranks_in_the_order_they_came() -> None:
    t = MemTables()
    assert slots.claim(t, GATE, 1, "holder", 1, 0)
    # Accepted at 1000..1004; D has priority +600 s, E -600 s; B and C tie.
    ranks = {"A": rank(1000), "B": rank(1001), "C": rank(1001), "D": rank(1003, 600),
             "E": rank(1004, -600)}
    for run, r in ranks.items():
        assert not slots.claim(t, GATE, 1, run, 1, r)
    assert [slots.position(t, GATE, r) for r in "DABCE"] == [0, 1, 2, 3, 4]
    order = []
    current = "holder"
    for _ in range(5):
        [(current, _seq)] = slots.release(t, GATE, current)
        order.append(current)
    assert order == ["D", "A", "B", "C", "E"]


def test_duplicates_and_stale_copies_change_nothing() -> None:
    t = MemTables()
    assert slots.claim(t, GATE, 1, "A", 3, 0)
    assert not slots.claim(t, GATE, 1, "B", 2, 5)
    before = t.snapshot()
    assert slots.claim(t, GATE, 1, "A", 3, 0)       # a copy of A's claim
    assert slots.claim(t, GATE, 1, "A", 2, 0)       # an older claim of A's
    assert not slots.claim(t, GATE, 1, "B", 2, 99)  # B again, another rank: same place
    assert not slots.claim(t, GATE, 1, "B", 1, 5)   # an older claim of B's
    assert slots.release(t, GATE, "A", 2) == []     # a release of A's earlier task
    assert slots.release(t, GATE, "B", 1) == []     # a release of B's earlier task
    assert slots.release(t, GATE, "Z") == []        # never claimed
    assert slots.release(t, "other-gate", "A") == []
    assert t.snapshot() == before
    # A newer task of a queued run keeps its place and is dispatched as that task.
    assert not slots.claim(t, GATE, 1, "B", 3, 99)
    assert slots.release(t, GATE, "A", 3) == [("B", 3)]
    assert slots.release(t, GATE, "A", 3) == []


def test_a_queued_run_that_leaves_gives_up_its_place_and_an_idle_gate_is_deleted() -> None:
    t = MemTables()
    assert slots.claim(t, GATE, 1, "A", 1, 0)
    assert not slots.claim(t, GATE, 1, "B", 1, 1)
    assert not slots.claim(t, GATE, 1, "C", 1, 2)
    assert slots.release(t, GATE, "B") == []  # cancelled while queued: grants nothing
    assert slots.position(t, GATE, "C") == 0
    assert slots.release(t, GATE, "A") == [("C", 1)]
    assert slots.release(t, GATE, "C") == []
    assert t.values == {} and slots.limit_of(t, GATE) is None


def test_a_limit_change_applies_on_the_next_claim_or_at_once_with_set_limit() -> None:
    t = MemTables()
    for i, r in enumerate("ABCDE"):
        slots.claim(t, GATE, 2, r, 1, i)
    assert slots.set_limit(t, GATE, 4) == [("C", 1), ("D", 1)]
    # Lowered: nobody loses a slot, but releases grant nothing until below the limit.
    assert not slots.claim(t, GATE, 1, "F", 1, 9)
    assert slots.holders(t, GATE) == 4 and slots.limit_of(t, GATE) == 1
    assert [slots.release(t, GATE, r) for r in "ABCD"] == [[], [], [], [("E", 1)]]


def test_slots_over_the_engine_tables_survive_commits(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "runs-0")
    try:
        view = BatchView(store)
        for i in range(6):
            slots.claim(view, GATE, 2, f"R{i}", 1, 100 - i)  # later runs rank first
        view.commit(1)
        view = BatchView(store)
        assert slots.release(view, GATE, "R0") == [("R5", 1)]
        assert slots.release(view, GATE, "R5") == [("R4", 1)]
        view.commit(2)
        view = BatchView(store)
        assert (slots.holders(view, GATE), slots.queued(view, GATE)) == (2, 2)
        assert slots.release(view, GATE, "R1") == [("R3", 1)]
        assert slots.position(view, GATE, "R2") == 0
        view.commit(3)
        # The API reads the committed gate from the store itself.
        assert (slots.holders(store, GATE), slots.queued(store, GATE)) == (2, 1)
        assert slots.position(store, GATE, "R2") == 0 and slots.holds(store, GATE, "R3")
        assert slots.limit_of(store, GATE) == 2
    finally:
        store.close()


# --- properties ------------------------------------------------------------------

RUNS = st.sampled_from([f"R{i}" for i in range(8)])
OPS = st.lists(st.one_of(
    st.tuples(st.just("claim"), RUNS, st.integers(1, 3), st.integers(-5, 5)),
    st.tuples(st.just("release"), RUNS, st.one_of(st.none(), st.integers(1, 3)),
              st.just(0)),
), max_size=60)


class Model:
    """The rules, stated plainly: a dict of holders and a list in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: dict[str, int] = {}
        self.queue: list[tuple[int, int, str, int]] = []  # (rank, arrival, run, seq)
        self.arrivals = 0

    def claim(self, run: str, seq: int, rank: int) -> bool:
        if run in self.held:
            self.held[run] = max(self.held[run], seq)
            return True
        for i, (r, n, q, s) in enumerate(self.queue):
            if q == run:
                self.queue[i] = (r, n, q, max(s, seq))
                return False
        if len(self.held) < self.limit and not self.queue:
            self.held[run] = seq
            return True
        self.queue.append((rank, self.arrivals, run, seq))
        self.arrivals += 1
        return False

    def release(self, run: str, seq: int | None) -> list[tuple[str, int]]:
        if run in self.held:
            if seq is not None and seq < self.held[run]:
                return []
            del self.held[run]
        else:
            mine = [e for e in self.queue if e[2] == run]
            if not mine or (seq is not None and seq < mine[0][3]):
                return []
            self.queue.remove(mine[0])
        self.queue.sort()
        granted = []
        while self.queue and len(self.held) < self.limit:
            _, _, q, s = self.queue.pop(0)
            self.held[q] = s
            granted.append((q, s))
        return granted


@settings(max_examples=300)
@given(st.integers(1, 3), OPS, st.lists(st.booleans(), min_size=60, max_size=60))
def test_never_more_than_limit_holders_grants_in_rank_order_duplicates_change_nothing(
        limit: int, ops: list[tuple[str, str, int | None, int]], twice: list[bool]) -> None:
    t = MemTables()
    model = Model(limit)
    for (op, run, seq, r), again in zip(ops, twice, strict=False):
        if op == "claim":
            assert seq is not None
            granted = slots.claim(t, GATE, limit, run, seq, r)
            assert granted == model.claim(run, seq, r)
            if again:
                before = t.snapshot()
                assert slots.claim(t, GATE, limit, run, seq, r) == granted
                assert t.snapshot() == before
        else:
            queued_before = sorted(model.queue)
            out = slots.release(t, GATE, run, seq)
            assert out == model.release(run, seq)
            # The grants are the head of the backlog as it stood: lowest rank first,
            # equal ranks in the order they came.
            heads = [(q, s) for _, _, q, s in queued_before if q != run][:len(out)]
            assert out == heads
            if again:
                before = t.snapshot()
                assert slots.release(t, GATE, run, seq) == []
                assert t.snapshot() == before
        assert slots.holders(t, GATE) == len(model.held) <= limit
        assert slots.queued(t, GATE) == len(model.queue)
        assert all(slots.holds(t, GATE, q) for q in model.held)
        ordered = sorted(model.queue)
        assert [slots.position(t, GATE, q) for _, _, q, _ in ordered] == list(
            range(len(ordered)))
    if not model.held and not model.queue:
        assert t.values == {}


def test_a_count_that_disagrees_with_the_backlog_heals_on_the_next_grant() -> None:
    t = MemTables()
    slots.claim(t, GATE, 1, "A", 1, 0)
    slots.claim(t, GATE, 1, "B", 1, 1)
    t.values[keys.gate_key(slots.KIND, GATE)]["queued"] = 5  # as if entries were lost
    assert slots.release(t, GATE, "A") == [("B", 1)]
    # The next grant finds the backlog empty: the count resets and the idle gate goes.
    assert slots.release(t, GATE, "B") == [] and t.values == {}
    assert slots.queued(t, GATE) == 0
