"""Merging several engines' answers (engine/cluster/merge.py): pure, no I/O."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.cluster.merge import (
    Answer,
    Gathered,
    Partial,
    coverage,
    first_run,
    merged_flow_state,
    newest_first,
    union_by_run_id,
)


def run(run_id: str, engine: str = "") -> dict[str, Any]:
    return {"run_id": run_id, "seen_by": engine}


def answer(engine: str, parts: set[int], result: Any) -> Answer:
    return Answer(engine, frozenset(parts), result)


def page(engine: str, ids: list[str], parts: set[int] | None = None) -> Answer:
    return answer(engine, parts or set(),
                  [run(i, engine) for i in sorted(ids, reverse=True)])


def test_newest_first_merges_pages_and_stops_at_the_limit() -> None:
    merged = newest_first([page("b", ["05", "03", "01"]), page("a", ["06", "04", "02"])], 4)
    assert [r["run_id"] for r in merged] == ["06", "05", "04", "03"]


def test_a_run_held_by_two_engines_is_listed_once_as_the_first_engine_has_it() -> None:
    # During a rebalance two engines may both hold a partition for a moment.
    merged = newest_first([page("b", ["03", "02"]), page("a", ["02", "01"])], 10)
    assert [(r["run_id"], r["seen_by"]) for r in merged] == [
        ("03", "b"), ("02", "a"), ("01", "a")]
    assert newest_first([page("a", ["01"])], 0) == []


@given(st.dictionaries(st.text("0123456789abcdef", min_size=4, max_size=4),
                       st.integers(0, 2), max_size=40),
       st.integers(1, 7))
def test_paging_the_merge_lists_every_run_once_in_pages_of_exactly_limit(
        owner: dict[str, int], limit: int) -> None:
    """What the API does: each engine lists ``limit + 1`` below the cursor, the merge
    keeps ``limit + 1``; the page is the first ``limit``, the cursor its last id."""
    def engine_page(e: int, cursor: str | None) -> Answer:
        ids = [i for i, o in owner.items() if o == e and (cursor is None or i < cursor)]
        return page(str(e), sorted(ids, reverse=True)[:limit + 1])

    pages, cursor = [], None
    while True:
        merged = newest_first([engine_page(e, cursor) for e in range(3)], limit + 1)
        pages.append([r["run_id"] for r in merged[:limit]])
        if len(merged) <= limit:
            break
        cursor = pages[-1][-1]
    assert [i for p in pages for i in p] == sorted(owner, reverse=True)
    assert all(len(p) == limit for p in pages[:-1])
    assert len(pages[-1]) <= limit


def test_runs_of_an_event_are_the_union_sorted_by_run_id() -> None:
    merged = union_by_run_id([page("b", ["03", "01"]), page("a", ["02", "01"]),
                              answer("c", set(), None)])
    assert [(r["run_id"], r["seen_by"]) for r in merged] == [
        ("01", "a"), ("02", "a"), ("03", "b")]


def test_one_run_is_the_first_engines_copy() -> None:
    assert first_run([answer("b", set(), run("1", "b")), answer("a", set(), None)]) == \
        run("1", "b")
    assert first_run([answer("b", set(), run("1", "b")),
                      answer("a", set(), run("1", "a"))]) == run("1", "a")
    assert first_run([answer("a", set(), None)]) is None


def test_coverage_is_complete_when_the_answers_read_every_partition() -> None:
    # The silent engine's partitions moved to one that answered: nothing is missing.
    assert coverage([answer("a", {0, 1}, None), answer("b", {2, 3}, None)], 4,
                    silent=["c"]) is None


def test_coverage_names_what_was_not_read() -> None:
    partial = coverage([answer("a", {0, 2}, None)], 4, silent=["c", "b", "c"])
    assert partial == Partial(("b", "c"), (1, 3))
    assert partial.fields() == {"partial": True, "missing_engines": ["b", "c"],
                                "missing_partitions": [1, 3]}
    # No engine is silent, yet partitions were not read: being reassigned.
    assert coverage([], 2, silent=[]) == Partial((), (0, 1))


def test_gathered_is_a_list_with_its_partial() -> None:
    runs = Gathered([run("1")], Partial(("b",), (1,)))
    assert runs == [run("1")] and runs.partial == Partial(("b",), (1,))
    assert Gathered().partial is None


def test_flow_state_of_several_engines_is_one_sorted_flow_state() -> None:
    def state(entries: list[dict[str, Any]], partitions: int, truncated: bool
              ) -> dict[str, Any]:
        return {"flow_state": {"concurrency": entries, "throttle": [], "rate_limit": [],
                               "singleton": [], "partitions": partitions,
                               "truncated": truncated}}
    merged = merged_flow_state([
        state([{"key": "b", "scope": "fn", "running": 1, "queued": 0, "limit": 2}], 2,
              False),
        state([{"key": None, "scope": "fn", "running": 2, "queued": 5, "limit": 2},
               {"key": "a", "scope": "env", "running": 1, "queued": 0, "limit": 9}], 2,
              True),
        {"flow_state": None}])
    assert [(e["key"], e["scope"]) for e in merged["concurrency"]] == [
        (None, "fn"), ("b", "fn"), ("a", "env")]
    assert merged["partitions"] == 4 and merged["truncated"] is True
    assert merged["throttle"] == [] and merged["singleton"] == []
