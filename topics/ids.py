"""Identifiers. ULIDs sort by time; derived ids are deterministic so retries dedupe."""

from __future__ import annotations

import hashlib
import os
import threading

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Two characters (10 bits) at a time: 13 lookups instead of 26 shifts and appends, as
# the fold derives an id for every run that ends.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_SHIFTS = tuple(range(120, -1, -10))


def _ulid(ms: int, entropy: bytes) -> str:
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(entropy[:10], "big")
    return "".join([_PAIRS[(value >> s) & 1023] for s in _SHIFTS])


_last = [-1, 0]  # the time and entropy of this process's latest new_ulid
_last_lock = threading.Lock()


def new_ulid(ms: int) -> str:
    """A fresh ULID for time ``ms`` (random entropy): for ids nobody needs to re-derive.

    Monotonic within the process (the ULID spec's monotonic mode): a second id in the
    same millisecond, or with a clock that went back, is the previous one plus one, so
    the ids one client gives its events sort in the order it created them — the engine
    breaks ties between events sent in the same millisecond by id."""
    with _last_lock:
        if ms <= _last[0] and _last[1] < (1 << 80) - 1:
            ms, entropy = _last[0], _last[1] + 1
        else:
            entropy = int.from_bytes(os.urandom(10), "big")
        _last[0], _last[1] = ms, entropy
    return _ulid(ms, entropy.to_bytes(10, "big"))


def derived_ulid(ms: int, *parts: str) -> str:
    """A ULID whose time is ``ms`` and whose entropy is a hash of ``parts``: the same
    inputs always give the same id, so a re-delivered record produces the same id."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).digest()
    return _ulid(ms, digest)


def run_id_for(fn_id: str, event_id: str, event_ts: int) -> str:
    """The run a function gets for an event: one event starts at most one run per function."""
    return derived_ulid(event_ts, "run", fn_id, event_id)


def sent_event_id(run_id: str, step_id: str, index: int, ts: int) -> str:
    """The id of the ``index``-th event sent by step ``step_id`` of a run.

    ``ts`` must be fixed for the run (the SDK passes the run id's own time), so that
    re-executing the step after a crash derives the same ids and downstream dedupes.
    """
    return derived_ulid(ts, "send", run_id, step_id, str(index))


def ulid_ms(ulid: str) -> int:
    """The millisecond timestamp inside a ULID."""
    value = 0
    for ch in ulid[:10]:
        value = value * 32 + _CROCKFORD.index(ch)
    return value


def dedupe_key_for(fn_id: str, kind: str, *parts: str) -> str:
    """The key that lets one run of ``fn_id`` start per window: ``kind`` says what the
    parts are (``event``: an event id; ``key``: an idempotency value as JSON; ``cron``:
    the expression and tick). Runs sharing one share a partition, where it is held."""
    return "\x1f".join((fn_id, kind, *parts))


def trace_id_for(run_id: str) -> str:
    """The OpenTelemetry trace id (32 hex digits) of a run's trace, derived from the run
    id alone, so the engine and every worker put their spans into one trace without
    telling each other. The run's root span id is the first 16 digits of the same
    derivation under another label (:func:`run_span_id_for`)."""
    digest = hashlib.blake2b(f"trace\x1f{run_id}".encode(), digest_size=16).hexdigest()
    # All-zero is the invalid trace id in OpenTelemetry; a 2**-128 chance, but never it.
    return digest if digest.strip("0") else "1".rjust(32, "0")


def run_span_id_for(run_id: str) -> str:
    """The span id (16 hex digits) of a run's root span, which the engine emits when the
    run ends and every step attempt's span names as its parent."""
    digest = hashlib.blake2b(f"span\x1f{run_id}".encode(), digest_size=8).hexdigest()
    return digest if digest.strip("0") else "1".rjust(16, "0")
