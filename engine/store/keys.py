"""The storage key layout: every prefix, with its builders and parsers.

The one home of the layout (the table is in docs/architecture.md, "State tables"): no
other module writes a prefix or slices a key. Each ``runs`` partition has one RocksDB
database holding its runs, timers, event index, dedupe keys, cron ticks, expiry index
and offset, so one WriteBatch covers state changes and the input offset atomically.
Each ``waits`` partition has its own database for the matcher's wait index, with the
same offset key and expiry index. Pure: bytes in, bytes out.
"""

from __future__ import annotations

from typing import Any

import msgpack

# --- runs partitions ---------------------------------------------------------------
RUN = b"r/"
TIMER = b"t/"
EVENT = b"e/"
DEDUPE = b"i/"  # the bytes predate the name: a dedupe key's holder, not "meta"
CRON = b"c/"
EXPIRY = b"x/"
OFFSET_KEY = b"m/offset"
# Bounded restore (docs/architecture.md, "Restore"). The ids of the runs not ended yet,
# so a snapshot reads the live runs without scanning every run ever kept; and the mark
# that every key which left the live state up to the stored offset is on ``history``.
LIVE = b"l/"
HISTORY_MARK = b"m/history"
# Set (to the snapshot's offset) in the WriteBatch that restores a snapshot, deleted
# when the partition's finished runs are loaded: a restart midway goes on loading.
HISTORY_PENDING = b"m/history-pending"
# Keys that leave the live state: a finished run's state and the event -> runs index
# (written, never read by the fold). They go to ``history``, not into snapshots.
ARCHIVED_PREFIXES = (EVENT, RUN)
# Flow control (engine/flow): a gate's state, its backlog in rank order, and where each
# queued run sits in that backlog (so a run is found without scanning the backlog).
GATE = b"g/"
PLACE = b"p/"
BACKLOG = b"q/"
# What the state hash covers (every table but the offset), in key order.
STATE_PREFIXES = (CRON, EVENT, GATE, DEDUPE, PLACE, BACKLOG, RUN, TIMER, EXPIRY)

# --- waits partitions (the matcher) -----------------------------------------------
INDEXED = b"w/"
UNINDEXED = b"a/"
FIELDS = b"f/"

_TIME_BYTES = 8
# Backlog ranks are signed (a priority can put a run before the epoch); offset by 2**63
# they sort as unsigned big-endian bytes.
_RANK_OFFSET = 1 << 63
# Run ids are ASCII, so this sorts after every run key: a newest-first scan starts here.
RUNS_END = RUN + b"\xff"


def _ms(value: int) -> bytes:
    return max(0, value).to_bytes(_TIME_BYTES, "big")


def run_key(run_id: str) -> bytes:
    return RUN + run_id.encode()


def parse_run_key(key: bytes) -> str:
    return key[len(RUN):].decode()


def live_key(run_id: str) -> bytes:
    """The live-run index entry of a run not ended yet (empty value)."""
    return LIVE + run_id.encode()


def parse_live_key(key: bytes) -> str:
    return key[len(LIVE):].decode()


def timer_key(due_ms: int, run_id: str, timer_id: str) -> bytes:
    """Timer keys sort by due time, so the timer service reads only the due prefix."""
    return TIMER + due_ms.to_bytes(_TIME_BYTES, "big") + f"{run_id}/{timer_id}".encode()


def timers_from(after_ms: int) -> bytes:
    """Where the timers due after ``after_ms`` begin (all timers for a negative value)."""
    return TIMER + (after_ms + 1).to_bytes(_TIME_BYTES, "big") if after_ms >= 0 else TIMER


def is_timer_key(key: bytes) -> bool:
    return key.startswith(TIMER)


def parse_timer_key(key: bytes) -> tuple[int, str, str]:
    """``(due_ms, run_id, timer_id)`` of a timer key."""
    start = len(TIMER)
    due = int.from_bytes(key[start:start + _TIME_BYTES], "big")
    run_id, _, timer_id = key[start + _TIME_BYTES:].decode().partition("/")
    return due, run_id, timer_id


def event_runs_prefix(event_id: str) -> bytes:
    return EVENT + event_id.encode() + b"/"


def event_run_key(event_id: str, run_id: str) -> bytes:
    """The event -> runs index entry (empty value)."""
    return event_runs_prefix(event_id) + run_id.encode()


def dedupe_key(key: str) -> bytes:
    """Where the run holding the dedupe key ``key`` is kept until the key expires."""
    return DEDUPE + key.encode()


def cron_key(fn_id: str, cron: str) -> bytes:
    """The last fired tick of a function's cron trigger."""
    return CRON + f"{fn_id}\x1f{cron}".encode()


def expiry_key(expires_ms: int, key: bytes) -> bytes:
    """An expiry index entry: ``key`` goes once a record's time passes ``expires_ms``."""
    return EXPIRY + _ms(expires_ms) + key


def expiries_before(now_ms: int) -> bytes:
    """The upper bound of the expiry entries due before ``now_ms``."""
    return EXPIRY + now_ms.to_bytes(_TIME_BYTES, "big")


def parse_expiry_key(key: bytes) -> tuple[int, bytes]:
    """``(expires_ms, key)`` of an expiry index entry."""
    start = len(EXPIRY)
    return int.from_bytes(key[start:start + _TIME_BYTES], "big"), key[start + _TIME_BYTES:]


def offset_value(next_offset: int) -> bytes:
    return next_offset.to_bytes(8, "big")


def parse_offset_value(raw: bytes | None) -> int:
    return int.from_bytes(raw, "big") if raw is not None else 0


def _pk(value: Any) -> bytes:
    # msgpack is self-delimiting: a prefix scan for one value never runs into another.
    return msgpack.packb(value, use_bin_type=True)


def wait_key(name: str, field: str | None, value: Any, wait_id: str) -> bytes:
    """A wait: indexed by the value the event must carry, or unindexed without ``match``."""
    if field is None:
        return UNINDEXED + _pk(name) + wait_id.encode()
    return INDEXED + _pk(name) + _pk(field) + _pk(value) + wait_id.encode()


def waits_matching(name: str, field: str, value: Any) -> bytes:
    """The prefix of the indexed waits of event ``name`` on ``field`` == ``value``."""
    return INDEXED + _pk(name) + _pk(field) + _pk(value)


def unindexed_waits(name: str) -> bytes:
    """The prefix of the waits of event ``name`` without ``match``."""
    return UNINDEXED + _pk(name)


def field_key(name: str, field: str) -> bytes:
    """A field some wait of event ``name`` matches on (kept; there are few)."""
    return FIELDS + _pk(name) + _pk(field)


def fields_of(name: str) -> bytes:
    """The prefix of :func:`field_key` entries of event ``name``."""
    return FIELDS + _pk(name)


def parse_field_key(key: bytes, name: str) -> str:
    """The field of a :func:`field_key` of event ``name``."""
    field: str = msgpack.unpackb(key[len(fields_of(name)):], raw=False)
    return field


# --- flow-control gates (runs partitions) ------------------------------------------
# A gate is named by its kind (``concurrency``, ``throttle``, ...) and its key (the
# partition key: ``{fn_id}``, ``{fn_id}/{key value}`` or ``env/{key value}``). Key values
# are user strings that may hold "/", so backlog and place keys carry the gate key
# self-delimited (msgpack): gate ``f/a`` never scans into gate ``f/a/b``'s entries.


def gate_key(kind: str, gate: str) -> bytes:
    """A gate's state: ``g/{kind}/{gate key}`` (an exact key; never prefix-scanned per gate)."""
    return GATE + f"{kind}/{gate}".encode()


def parse_gate_key(key: bytes) -> tuple[str, str]:
    """``(kind, gate key)`` of a :func:`gate_key`."""
    kind, _, gate = key[len(GATE):].decode().partition("/")
    return kind, gate


def backlog_prefix(kind: str, gate: str) -> bytes:
    """Where a gate's backlog begins: its entries follow in (rank, seq) order."""
    return BACKLOG + kind.encode() + b"/" + _pk(gate)


def backlog_key(kind: str, gate: str, rank: int, seq: int, run_id: str) -> bytes:
    """A queued run: ``q/{kind}/{gate}{rank + 2**63, 8 bytes BE}{seq, 8 bytes BE}{run_id}``."""
    return backlog_prefix(kind, gate) + _rank_seq(rank, seq) + run_id.encode()


def parse_backlog_key(key: bytes, prefix: bytes) -> tuple[int, int, str]:
    """``(rank, seq, run_id)`` of a backlog key under ``prefix`` (its gate's
    :func:`backlog_prefix`)."""
    start = len(prefix)
    rank = int.from_bytes(key[start:start + 8], "big") - _RANK_OFFSET
    seq = int.from_bytes(key[start + 8:start + 16], "big")
    return rank, seq, key[start + 16:].decode()


def place_key(kind: str, gate: str, run_id: str) -> bytes:
    """Where a queued run sits in a gate's backlog (its rank and seq): lets a claim, a
    release or a position find the run without scanning the backlog."""
    return PLACE + kind.encode() + b"/" + _pk(gate) + run_id.encode()


def _rank_seq(rank: int, seq: int) -> bytes:
    if not -_RANK_OFFSET <= rank < _RANK_OFFSET or not 0 <= seq < 1 << 64:
        raise ValueError(f"backlog rank {rank} or seq {seq} out of range")
    return (rank + _RANK_OFFSET).to_bytes(8, "big") + seq.to_bytes(8, "big")
