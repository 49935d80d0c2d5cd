"""Apply a batch of raw ``runs`` records to one partition's tables.

Shared by the live processor and by replay, so both fold the same way: records at
offsets already applied are skipped, undecodable or inapplicable records become dead
letters, and everything else goes through the pure fold against one :class:`BatchView`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from engine import fold
from engine.runtime.recovery import StateCorrupt, is_corruption, reason_of
from engine.store.partition import PartitionStore
from engine.store.view import BatchView, NeedsHistory
from topics.codec import DecodeError, decode
from topics.records import DeadLetter, RunRequested, Task, bounded_dead_letter
from topics.settings import Settings

log = logging.getLogger("stepstream.processor")



@dataclass(frozen=True, slots=True)
class Fold:
    """Which fold a partition's records go through, and which record kinds it takes."""

    # (tables, record, its position on the log, the run limits, its log time)
    apply: Callable[[Any, Any, fold.Position, fold.Limits, int | None], list[fold.Emit]]
    expect: tuple[type, ...]
    # Whether ``apply`` reads the log time: the run fold does not, and reading it is a
    # call into the Kafka message per record.
    log_time: bool = True


# The run fold takes no log time (its times come from the records); the matcher keeps no
# references to its records and has no run limits, but checks expiry at the log time.
# The kinds each topic carries are the keys of its fold's handler table.
RUNS_FOLD = Fold(lambda tables, rec, at, limits, _log_ms: fold.apply(tables, rec, at, limits),
                 tuple(fold.RUNS_HANDLERS), log_time=False)
WAITS_FOLD = Fold(lambda tables, rec, _at, _limits, log_ms: fold.apply_waits(tables, rec, log_ms),
                  tuple(fold.WAITS_HANDLERS))


class RawRecord(Protocol):
    """What the fold needs of a consumed message (confluent_kafka.Message has it)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> Any: ...
    def value(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(slots=True)
class BatchResult:
    view: BatchView
    emits: list[fold.Emit] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    next_offset: int = 0
    applied: int = 0
    # The offset of a record that must wait for the partition's finished runs to load
    # (engine/runtime/history.py): the batch stops before it.
    blocked_at: int | None = None


def apply_batch(store: PartitionStore, records: Sequence[RawRecord], settings: Settings, *,
                live_from: int, now_ms: int, folder: Fold = RUNS_FOLD) -> BatchResult:
    """Fold ``records`` (one partition, offset order) into a new view of ``store``.

    Emits from records below ``live_from`` are dropped: those records were processed
    (and their emits produced) before, and are folded again only to rebuild state.
    ``now_ms`` (the caller's clock) stamps dead letters only; the fold takes its time
    from the records. If the fold itself raises on a record, that record becomes a dead letter and the
    batch is folded again without it, so no half-applied change survives. RocksDB
    reporting the store corrupt raises :class:`StateCorrupt` instead.
    """
    poisoned: dict[int, str] = {}
    blocked_at: int | None = None
    while True:
        try:
            result = _fold_all(store, records, settings, live_from, now_ms, poisoned, folder)
            result.blocked_at = blocked_at
            return result
        except _Blocked as blocked:
            # Fold what comes before it; the processor reads it again once loaded.
            blocked.view.discard()
            blocked_at = blocked.offset
            records = [m for m in records if (m.offset() or 0) < blocked.offset]
        except _FoldCrash as crash:
            crash.view.discard()
            poisoned[crash.offset] = crash.reason
        except Exception as exc:
            # Damaged storage is not the record's fault: dead-lettering would lose it.
            if is_corruption(exc):
                raise StateCorrupt(store.path, reason_of(exc)) from exc
            raise


class _Blocked(Exception):
    def __init__(self, offset: int, view: BatchView) -> None:
        super().__init__(f"offset {offset} waits for history")
        self.offset = offset
        self.view = view


def _may_be_new(rec: object) -> str | None:
    """The run a record may create while finished runs still load: a routed
    ``run.requested``'s own, whose dedupe key (kept in the live state for its window)
    tells a re-delivery from a new run. A forwarded one was admitted elsewhere, so the
    run it names may have ended here: it waits, like every other record."""
    if isinstance(rec, RunRequested) and rec.dedupe_key and not (rec.flow or {}).get(
            "admitted"):
        return rec.run_id
    return None


class _FoldCrash(Exception):
    def __init__(self, offset: int, reason: str, view: BatchView) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.view = view


def _fold_all(store: PartitionStore, records: Sequence[RawRecord], settings: Settings,
              live_from: int, now: int, poisoned: dict[int, str], folder: Fold
              ) -> BatchResult:
    result = BatchResult(BatchView(store), next_offset=store.next_offset())
    limits = fold.Limits.from_settings(settings)
    for msg in records:
        offset = msg.offset()
        assert offset is not None
        if offset < result.next_offset:
            continue  # applied in an earlier batch: the stored offset says so
        result.next_offset = offset + 1
        reason = poisoned.get(offset)
        if reason is None:
            try:
                rec = decode(msg.value(), max_bytes=settings.max_record_bytes,
                             max_depth=settings.max_depth, expect=folder.expect)
                at = fold.Position(msg.partition() or 0, offset)
                result.view.may_be_new = _may_be_new(rec)
                emits = folder.apply(result.view, rec, at, limits,
                                     log_time_ms(msg) if folder.log_time else None)
            except NeedsHistory:
                raise _Blocked(offset, result.view) from None
            except DecodeError as exc:
                reason = f"undecodable: {exc}"
            except fold.NotApplicable as exc:
                reason = f"not applicable: {exc}"
            except Exception as exc:
                if is_corruption(exc):
                    raise
                log.exception("fold failed on %s[%s]@%s", msg.topic(), msg.partition(), offset)
                raise _FoldCrash(offset, f"fold error: {type(exc).__name__}: {exc}",
                                 result.view) from exc
            else:
                result.applied += 1
                if offset >= live_from:
                    for e in emits:
                        if isinstance(e.record, Task):
                            # Where a worker taking this task over finds the run's
                            # checkpoints (sdk/_handover.py); not state, so not the fold's.
                            e.record.runs_at = [at.partition, at.offset]
                    result.emits.extend(emits)
                continue
        if offset >= live_from:
            result.dead.append(dead_letter(msg, reason, now, settings.max_record_bytes))
    return result


def log_time_ms(msg: RawRecord) -> int | None:
    """The record's Kafka timestamp (stored in the log, so replay sees the same), if any."""
    kind, ts = msg.timestamp()
    return ts if kind != TIMESTAMP_NOT_AVAILABLE and ts >= 0 else None


def dead_letter(msg: RawRecord, reason: str, now_ms: int, max_record_bytes: int
                ) -> DeadLetter:
    """The dead letter of a consumed record, bounded to fit in one record."""
    key = msg.key()
    value = msg.value()
    return bounded_dead_letter(source_topic=msg.topic() or "", partition=msg.partition() or 0,
                               offset=msg.offset() or 0,
                               key=key if isinstance(key, bytes) else None,
                               value=value if isinstance(value, bytes) else None,
                               reason=reason, ts=now_ms, max_record_bytes=max_record_bytes)
