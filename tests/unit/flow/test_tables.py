"""The tables flow control needs: ordered prefix scans and deletes of values (BatchView
over a real RocksDB partition store, and the in-memory tables), and the gate key layout."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.store import keys
from engine.store.memory import MemTables
from engine.store.partition import PartitionStore
from engine.store.view import BatchView

# Keys under a few prefixes, so scans meet neighbours on both sides.
KEYS = st.builds(lambda p, s: p + s, st.sampled_from([b"q/a", b"q/b", b"q/", b"r"]),
                 st.binary(max_size=3))
OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), KEYS, st.integers(0, 9)),
    st.tuples(st.just("delete"), KEYS, st.just(0)),
    st.tuples(st.just("commit"), st.just(b""), st.just(0)),
), max_size=40)


def _expected(model: dict[bytes, Any], prefix: bytes, limit: int | None
              ) -> list[tuple[bytes, Any]]:
    return sorted((k, v) for k, v in model.items() if k.startswith(prefix))[:limit]


@settings(max_examples=60, deadline=None)
@given(OPS, st.sampled_from([b"q/a", b"q/", b"r"]),
       st.one_of(st.none(), st.integers(0, 6)))
def test_batch_view_scan_merges_the_store_and_the_batch_in_key_order(
        ops: list[tuple[str, bytes, int]], prefix: bytes, limit: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = PartitionStore(Path(tmp) / "p")
        try:
            view = BatchView(store)
            model: dict[bytes, Any] = {}
            offset = 0
            for op, key, value in ops:
                if op == "put":
                    view.put_value(key, value)
                    model[key] = value
                elif op == "delete":
                    view.delete_value(key)
                    model.pop(key, None)
                else:
                    offset += 1
                    view.commit(offset)
                    view = BatchView(store)
                assert view.scan_values(prefix, limit) == _expected(model, prefix, limit)
            view.commit(offset + 1)
            assert BatchView(store).scan_values(prefix, limit) == _expected(model, prefix,
                                                                            limit)
        finally:
            store.close()


@given(OPS, st.sampled_from([b"q/a", b"q/", b""]), st.one_of(st.none(), st.integers(0, 6)))
def test_memory_tables_scan_and_delete_values(ops: list[tuple[str, bytes, int]],
                                              prefix: bytes, limit: int | None) -> None:
    tables = MemTables()
    model: dict[bytes, Any] = {}
    for op, key, value in ops:
        if op == "put":
            tables.put_value(key, value)
            model[key] = value
        elif op == "delete":
            tables.delete_value(key)
            model.pop(key, None)
        assert tables.scan_values(prefix, limit) == _expected(model, prefix, limit)
        assert tables.get_value(key) == model.get(key)


def test_a_limited_scan_reads_the_head_of_a_long_range_only(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p")
    try:
        view = BatchView(store)
        for i in range(1000):
            view.put_value(b"q/x" + i.to_bytes(4, "big"), i)
        view.commit(1)
        view = BatchView(store)
        view.delete_value(b"q/x" + (0).to_bytes(4, "big"))
        view.put_value(b"q/x" + (1).to_bytes(4, "big") + b"!", "new")
        assert [v for _, v in view.scan_values(b"q/x", 3)] == [1, "new", 2]
    finally:
        store.close()


def test_backlog_keys_sort_by_rank_then_seq_negative_ranks_first() -> None:
    entries = [(5, 0, "a"), (-3, 7, "b"), (-3, 2, "c"), (0, 1, "d"), (-(2**62), 9, "e"),
               (5, 1, "f")]
    built = sorted(keys.backlog_key("concurrency", "fn/k", r, s, run) for r, s, run in entries)
    prefix = keys.backlog_prefix("concurrency", "fn/k")
    assert [keys.parse_backlog_key(k, prefix) for k in built] == sorted(entries)
    with pytest.raises(ValueError):
        keys.backlog_key("concurrency", "fn/k", 2**63, 0, "x")


def test_a_gate_whose_key_extends_another_never_shares_its_backlog_or_places() -> None:
    # Key values are user strings: "a" and "a/b" must not meet in a prefix scan.
    short = keys.backlog_prefix("concurrency", "fn/a")
    longer = keys.backlog_key("concurrency", "fn/a/b", 0, 0, "R1")
    assert not longer.startswith(short)
    assert not keys.place_key("concurrency", "fn/a/b", "R1").startswith(
        keys.place_key("concurrency", "fn/a", ""))
    assert not keys.backlog_key("throttle", "fn/a", 0, 0, "R").startswith(short)


def test_gate_keys_round_trip_and_every_prefix_is_hashed_in_key_order() -> None:
    key = keys.gate_key("concurrency", "env/acct/7")
    assert key == b"g/concurrency/env/acct/7"
    assert keys.parse_gate_key(key) == ("concurrency", "env/acct/7")
    assert {keys.GATE, keys.PLACE, keys.BACKLOG} <= set(keys.STATE_PREFIXES)
    assert list(keys.STATE_PREFIXES) == sorted(keys.STATE_PREFIXES)
