"""The wire format of the ``snapshots`` and ``history`` topics (docs/architecture.md,
"Restore"). Pure: bytes in, bytes out.

A snapshot is the live state of one partition database (``runs`` or ``waits``) at one
stored input offset, written to ``snapshots`` partition ``p`` as a sequence:

- a **begin** marker: snapshot id, table, partition, the stored input offset, time;
- **chunks**: the state as one byte stream of length-prefixed key/value pairs, cut
  into records of at most ``CHUNK_BYTES`` (a run's state may be larger than a record);
- an **end** marker: the Kafka offset of its begin marker, the chunk count, the stream's
  length and SHA-256.

A snapshot is used only when its end marker is found and everything between matches
it: an engine killed mid-snapshot leaves a begin and some chunks, which are skipped.

A ``history`` record is one key of a partition database that left the live state (a
finished run's state, an event-index entry), with the ``runs`` offset its batch ended
at; keyed by the database key, so a compacted topic keeps each key's last value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from topics.codec import packb

T = TypeVar("T")

VERSION = 1
CHUNK_BYTES = 256 * 1024
BEGIN = "snapshot.begin"
CHUNK = "snapshot.chunk"
END = "snapshot.end"


class SnapshotError(ValueError):
    """A snapshot or history record that is not one this module wrote."""


@dataclass(frozen=True, slots=True)
class Begin:
    snapshot_id: str
    table: str  # "runs" or "waits"
    partition: int
    offset: int  # the database's stored next input offset
    ts: int


@dataclass(frozen=True, slots=True)
class Chunk:
    snapshot_id: str
    seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class End:
    snapshot_id: str
    table: str
    begin_offset: int  # where this snapshot's begin marker is on the partition
    chunks: int
    entries: int
    size: int
    sha256: str


SnapshotRecord = Begin | Chunk | End


def record_key(table: str, partition: int) -> bytes:
    """The Kafka key of every record of one database's snapshots."""
    return f"{table}/{partition}".encode()


def encode(rec: SnapshotRecord) -> bytes:
    if isinstance(rec, Begin):
        return packb({"kind": BEGIN, "v": VERSION, "id": rec.snapshot_id, "table": rec.table,
                      "partition": rec.partition, "offset": rec.offset, "ts": rec.ts})
    if isinstance(rec, Chunk):
        return packb({"kind": CHUNK, "v": VERSION, "id": rec.snapshot_id, "seq": rec.seq,
                      "data": rec.data})
    return packb({"kind": END, "v": VERSION, "id": rec.snapshot_id, "table": rec.table,
                  "begin": rec.begin_offset, "chunks": rec.chunks, "entries": rec.entries,
                  "size": rec.size, "sha256": rec.sha256})


def _decoded(raw: bytes | None, what: str, build: Callable[[dict[str, Any]], T]) -> T:
    """``build`` over the versioned map in ``raw``; any failure is a
    :class:`SnapshotError` naming ``what``."""
    try:
        m = msgpack.unpackb(raw or b"", raw=False)
        if not isinstance(m, dict) or m.get("v") != VERSION:
            raise SnapshotError(f"not a version-{VERSION} {what} record")
        return build(m)
    except SnapshotError:
        raise
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise SnapshotError(f"undecodable {what} record: {exc}") from None


def decode(raw: bytes | None) -> SnapshotRecord:
    """One snapshot record; raises :class:`SnapshotError` for anything else."""
    return _decoded(raw, "snapshot", _snapshot_record)


def _snapshot_record(m: dict[str, Any]) -> SnapshotRecord:
    kind = m.get("kind")
    if kind == BEGIN:
        return Begin(str(m["id"]), str(m["table"]), int(m["partition"]), int(m["offset"]),
                     int(m["ts"]))
    if kind == CHUNK:
        data = m["data"]
        if not isinstance(data, bytes):
            raise SnapshotError("chunk data is not bytes")
        return Chunk(str(m["id"]), int(m["seq"]), data)
    if kind == END:
        return End(str(m["id"]), str(m["table"]), int(m["begin"]), int(m["chunks"]),
                   int(m["entries"]), int(m["size"]), str(m["sha256"]))
    raise SnapshotError(f"unknown snapshot record kind {kind!r}")


def _pair(key: bytes, value: bytes) -> bytes:
    return (len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)


def chunked(snapshot_id: str, entries: Iterable[tuple[bytes, bytes]],
            chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk | tuple[int, int, str]]:
    """The chunks of a stream of ``entries``, then ``(entries, size, sha256)`` last."""
    digest = hashlib.sha256()
    buf = bytearray()
    seq = count = size = 0
    for key, value in entries:
        buf += _pair(key, value)
        count += 1
        while len(buf) >= chunk_bytes:
            part = bytes(buf[:chunk_bytes])
            del buf[:chunk_bytes]
            digest.update(part)
            size += len(part)
            yield Chunk(snapshot_id, seq, part)
            seq += 1
    if buf:
        digest.update(buf)
        size += len(buf)
        yield Chunk(snapshot_id, seq, bytes(buf))
    yield count, size, digest.hexdigest()


def entries_of(end: End, chunks: list[Chunk]) -> list[tuple[bytes, bytes]]:
    """The key/value pairs of a complete snapshot, checked against its end marker."""
    if [c.seq for c in chunks] != list(range(end.chunks)) or any(
            c.snapshot_id != end.snapshot_id for c in chunks):
        raise SnapshotError(f"snapshot {end.snapshot_id}: chunks do not match its end marker")
    stream = b"".join(c.data for c in chunks)
    if len(stream) != end.size or hashlib.sha256(stream).hexdigest() != end.sha256:
        raise SnapshotError(f"snapshot {end.snapshot_id}: size or checksum differs")
    out: list[tuple[bytes, bytes]] = []
    at = 0
    while at < len(stream):
        klen = int.from_bytes(stream[at:at + 4], "big")
        key = stream[at + 4:at + 4 + klen]
        at += 4 + klen
        vlen = int.from_bytes(stream[at:at + 4], "big")
        out.append((key, stream[at + 4:at + 4 + vlen]))
        at += 4 + vlen
    if at != len(stream) or len(out) != end.entries:
        raise SnapshotError(f"snapshot {end.snapshot_id}: entries do not match its end marker")
    return out


def complete_snapshot(records: list[tuple[int, SnapshotRecord]], table: str
                      ) -> tuple[Begin, list[tuple[bytes, bytes]]] | None:
    """The newest complete snapshot of ``table`` among ``records`` (``(Kafka offset,
    record)`` of one partition in offset order, as read from some offset to the end),
    with its entries; None if there is none. A snapshot whose end marker is missing
    (its writer was killed) or does not match what lies between is passed over, and
    the one before it is taken."""
    at = {offset: rec for offset, rec in records}
    for offset, rec in reversed(records):
        if not isinstance(rec, End) or rec.table != table:
            continue
        begin = at.get(rec.begin_offset)
        if not isinstance(begin, Begin) or begin.snapshot_id != rec.snapshot_id:
            continue
        chunks = [r for o, r in records if rec.begin_offset < o < offset
                  and isinstance(r, Chunk) and r.snapshot_id == rec.snapshot_id]
        try:
            return begin, entries_of(rec, chunks)
        except SnapshotError:
            continue
    return None


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """A database key that left the live state, as of ``runs`` offset ``at``; a value
    larger than one record is split into ``parts`` records (part ``part`` of them)."""

    key: bytes
    value: bytes
    at: int
    part: int = 0
    parts: int = 1


def history_records(key: bytes, value: bytes, at: int, max_bytes: int
                    ) -> list[tuple[bytes, HistoryRecord]]:
    """``(Kafka key, record)`` for one key's value: one record, or parts of at most
    ``max_bytes`` (each part under a key of its own, so compaction keeps every part)."""
    if len(value) <= max_bytes:
        return [(key, HistoryRecord(key, value, at))]
    pieces = [value[i:i + max_bytes] for i in range(0, len(value), max_bytes)]
    return [(key + b"\x00" + str(i).encode(), HistoryRecord(key, piece, at, i, len(pieces)))
            for i, piece in enumerate(pieces)]


class Reassembly:
    """Joins the parts of split history values as they are read."""

    def __init__(self) -> None:
        self._parts: dict[bytes, tuple[int, dict[int, bytes]]] = {}

    def add(self, rec: HistoryRecord) -> HistoryRecord | None:
        """The whole record once its last part is read (parts of another ``at`` are a
        different version of the value: the newer one replaces them)."""
        if rec.parts == 1:
            return rec
        at, parts = self._parts.get(rec.key, (rec.at, {}))
        if at != rec.at:
            parts = {}
        parts[rec.part] = rec.value
        if len(parts) < rec.parts:
            self._parts[rec.key] = (rec.at, parts)
            return None
        self._parts.pop(rec.key, None)
        return HistoryRecord(rec.key, b"".join(parts[i] for i in range(rec.parts)), rec.at)


def encode_history(rec: HistoryRecord) -> bytes:
    return packb({"v": VERSION, "k": rec.key, "val": rec.value, "at": rec.at,
                  "part": rec.part, "parts": rec.parts})


def decode_history(raw: bytes | None) -> HistoryRecord:
    return _decoded(raw, "history", _history_record)


def _history_record(m: dict[str, Any]) -> HistoryRecord:
    key, value = m["k"], m["val"]
    if not isinstance(key, bytes) or not isinstance(value, bytes):
        raise SnapshotError("history key and value must be bytes")
    part, parts = int(m.get("part", 0)), int(m.get("parts", 1))
    if not 0 <= part < parts:
        raise SnapshotError(f"history part {part} of {parts}")
    return HistoryRecord(key, value, int(m["at"]), part, parts)
