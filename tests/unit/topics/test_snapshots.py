"""The snapshot and history record codec (topics/snapshots.py), and choosing the newest
complete snapshot among a partition's records."""

from __future__ import annotations

import pytest

from topics import snapshots as wire
from topics.catalog import Catalog
from topics.settings import Settings


def snapshot(snapshot_id: str, table: str, entries: list[tuple[bytes, bytes]], *,
             at: int, offset: int = 7, chunk_bytes: int = 64
             ) -> list[tuple[int, wire.SnapshotRecord]]:
    """The records one writer puts on a partition from Kafka offset ``at`` on."""
    out: list[tuple[int, wire.SnapshotRecord]] = [
        (at, wire.Begin(snapshot_id, table, 0, offset, 1000))]
    summary = None
    for item in wire.chunked(snapshot_id, entries, chunk_bytes):
        if isinstance(item, wire.Chunk):
            out.append((at + len(out), item))
        else:
            summary = item
    assert summary is not None
    count, size, sha = summary
    chunks = len(out) - 1
    out.append((at + len(out), wire.End(snapshot_id, table, at, chunks, count, size, sha)))
    return out


ENTRIES = [(b"r/R1", b"x" * 150), (b"m/offset", (7).to_bytes(8, "big")), (b"t/", b"")]


def test_every_record_kind_round_trips() -> None:
    for _offset, rec in snapshot("S1", "runs", ENTRIES, at=0):
        assert wire.decode(wire.encode(rec)) == rec


def test_a_value_larger_than_a_chunk_spans_chunks_and_comes_back_whole() -> None:
    records = snapshot("S1", "runs", ENTRIES, at=0, chunk_bytes=64)
    assert sum(isinstance(r, wire.Chunk) for _o, r in records) > 2
    found = wire.complete_snapshot(records, "runs")
    assert found is not None
    begin, entries = found
    assert (begin.snapshot_id, begin.offset, entries) == ("S1", 7, ENTRIES)


def test_a_snapshot_without_its_end_marker_is_passed_over_for_the_one_before() -> None:
    # The writer of S2 was killed after its begin marker and one chunk.
    complete = snapshot("S1", "runs", ENTRIES, at=0)
    killed = snapshot("S2", "runs", [(b"r/R2", b"y" * 200)], at=len(complete))[:2]
    found = wire.complete_snapshot(complete + killed, "runs")
    assert found is not None and found[0].snapshot_id == "S1"


def test_the_newest_complete_snapshot_of_the_table_asked_for_wins() -> None:
    s1 = snapshot("S1", "runs", ENTRIES, at=0)
    s2 = snapshot("S2", "runs", ENTRIES[:1], at=len(s1), offset=9)
    waits = snapshot("W1", "waits", [(b"w/x", b"")], at=len(s1) + len(s2))
    found = wire.complete_snapshot(s1 + s2 + waits, "runs")
    assert found is not None and (found[0].snapshot_id, found[0].offset) == ("S2", 9)
    found = wire.complete_snapshot(s1 + s2 + waits, "waits")
    assert found is not None and found[1] == [(b"w/x", b"")]


def test_a_chunk_that_does_not_match_the_checksum_spoils_only_its_snapshot() -> None:
    s1 = snapshot("S1", "runs", ENTRIES, at=0)
    s2 = snapshot("S2", "runs", ENTRIES, at=len(s1))
    offset, chunk = s2[1]
    assert isinstance(chunk, wire.Chunk)
    s2[1] = (offset, wire.Chunk("S2", chunk.seq, b"Z" + chunk.data[1:]))
    found = wire.complete_snapshot(s1 + s2, "runs")
    assert found is not None and found[0].snapshot_id == "S1"


def test_no_complete_snapshot_is_none() -> None:
    assert wire.complete_snapshot([], "runs") is None
    assert wire.complete_snapshot(snapshot("S1", "runs", ENTRIES, at=0)[:-1], "runs") is None


def test_records_that_are_not_snapshot_records_are_refused_with_a_reason() -> None:
    with pytest.raises(wire.SnapshotError, match="not a version-1"):
        wire.decode(b"\x93\x01\x02\x03")
    with pytest.raises(wire.SnapshotError, match="undecodable"):
        wire.decode(b"\xc1")
    with pytest.raises(wire.SnapshotError, match="not a version-1"):
        wire.decode_history(b"\x80")


def test_a_large_history_value_is_split_under_keys_of_its_own_and_joined_back() -> None:
    value = bytes(range(256)) * 10
    records = wire.history_records(b"r/R1", value, at=5, max_bytes=1000)
    assert [k for k, _r in records] == [b"r/R1\x000", b"r/R1\x001", b"r/R1\x002"]
    joined = wire.Reassembly()
    whole = [joined.add(wire.decode_history(wire.encode_history(r))) for _k, r in records]
    assert whole[:2] == [None, None]
    assert whole[2] == wire.HistoryRecord(b"r/R1", value, 5)
    [(key, small)] = wire.history_records(b"e/E/R1", b"", at=5, max_bytes=1000)
    assert key == b"e/E/R1" and joined.add(small) == small


def test_parts_of_an_older_version_of_a_value_are_dropped_for_the_newer() -> None:
    old = wire.history_records(b"r/R1", b"a" * 30, at=5, max_bytes=10)
    new = wire.history_records(b"r/R1", b"b" * 20, at=9, max_bytes=10)
    joined = wire.Reassembly()
    assert joined.add(old[0][1]) is None
    assert joined.add(new[0][1]) is None
    assert joined.add(new[1][1]) == wire.HistoryRecord(b"r/R1", b"b" * 20, 9)


def test_the_catalog_provisions_snapshots_per_partition_and_history_compacted() -> None:
    catalog = Catalog(Settings(prefix="s.", partitions=6))
    snaps, history = catalog.spec("s.snapshots"), catalog.spec("s.history")
    assert (snaps.partitions, history.partitions) == (6, 6)  # as many as runs
    assert snaps.config["cleanup.policy"] == "delete"
    assert history.config["cleanup.policy"] == "compact"
