"""The one codec for every topic: msgpack with limits.

Decoding untrusted bytes is bounded: total size, nesting depth, no ext types (so no
timestamps or custom objects), string map keys only, and known record kinds/versions.
Anything else raises :class:`DecodeError` with a reason fit for the dead-letter topic.
"""

from __future__ import annotations

import math
import threading
from dataclasses import fields
from typing import Any

import msgpack

from topics.records import RECORD_TYPES, Outcome, OutcomesReported, Record

_FIELDS: dict[type, tuple[str, ...]] = {
    t: tuple(f.name for f in fields(t)) for t in (*RECORD_TYPES.values(), Outcome)
}
_REQUIRED: dict[type, frozenset[str]] = {
    t: frozenset(
        f.name for f in fields(t)
        if f.default is f.default_factory  # both MISSING: no default at all
    )
    for t in (*RECORD_TYPES.values(), Outcome)
}

# Fields added to a record after its first release, written only when set: records that
# do not use them keep their bytes (and a pinned replay hash), and readers from before
# the field existed keep reading them.
_OMIT_NONE: dict[type, frozenset[str]] = {
    t: frozenset(getattr(t, "OMIT_NONE", ())) for t in RECORD_TYPES.values()
}

# One packer per thread: msgpack.packb builds a new Packer on every call, about a
# quarter of the cost of packing a small record; a Packer is not safe to share between threads.
_local = threading.local()


def packb(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``, with this thread's reused packer."""
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)


# The bytes that can start a map or an array (fixmap, fixarray, array 16/32, map 16/32)
# or a bin value. Deleting every other byte leaves at least one byte per container and
# per bin value in the record, in one C call: if that is no more than the depth limit
# and holds no bin marker, no map key can be bytes and no nesting can be too deep, and
# the tree walk (about a quarter of the cost of a decode) is skipped. Bytes inside strings and
# integers can look like markers too; then the walk runs, as it did for every record.
_BIN = b"\xc4\xc5\xc6"
_NOT_MARKERS = bytes(b for b in range(256)
                     if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF or bytes([b]) in _BIN))


def _surely_plain(data: bytes, max_depth: int) -> bool:
    markers = data.translate(None, _NOT_MARKERS)
    return len(markers) <= max_depth and len(markers.translate(None, _BIN)) == len(markers)


class DecodeError(ValueError):
    """Bytes that are not a valid stepstream record; ``str(err)`` is the reason."""


class PayloadError(ValueError):
    """A user value that cannot go on the wire (not JSON-compatible, too deep, too big)."""


def _no_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack ext type {code} is not allowed")


def encode(record: Record) -> bytes:
    """Serialize a record to its wire form."""
    body: dict[str, Any] = {"k": record.KIND, "v": record.VERSION}
    omit = _OMIT_NONE[type(record)]
    for name in _FIELDS[type(record)]:
        value = getattr(record, name)
        if value is None and name in omit:
            continue
        body[name] = value
    if isinstance(record, OutcomesReported):
        body["outcomes"] = [_outcome_to_wire(o) for o in record.outcomes]
        if body["progress"] is False:
            # Written only when set: every other report keeps its bytes, and an engine
            # from before the field reads it (decode rejects unknown fields).
            del body["progress"]
    return packb(body)


def _outcome_to_wire(o: Outcome) -> dict[str, Any]:
    out: dict[str, Any] = {"op": o.op}
    for name in _FIELDS[Outcome][1:]:
        value = getattr(o, name)
        if value is not None:
            out[name] = value
    return out


def decode(data: bytes | None, *, max_bytes: int = 8 * 1024 * 1024, max_depth: int = 64,
           expect: tuple[Any, ...] | None = None) -> Record:
    """Parse wire bytes into a record, enforcing the limits; raises :class:`DecodeError`."""
    if data is None:
        raise DecodeError("record has no value")
    if len(data) > max_bytes:
        raise DecodeError(f"record is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext,
                               use_list=True)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise DecodeError(f"not valid msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(body, dict):
        raise DecodeError(f"record must be a map, got {type(body).__name__}")
    if not _surely_plain(data, max_depth):
        _check_tree(body, max_depth)
    kind = body.pop("k", None)
    version = body.pop("v", None)
    cls: Any = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise DecodeError(f"unknown record kind {kind!r}")
    if expect is not None and cls not in expect:
        names = ", ".join(t.KIND for t in expect)
        raise DecodeError(f"record kind {kind!r} does not belong on this topic (expected {names})")
    if version != cls.VERSION:
        raise DecodeError(f"unsupported version {version!r} of {kind!r} (this build reads "
                          f"version {cls.VERSION})")
    record = _build(cls, body, kind)
    if isinstance(record, OutcomesReported):
        if not isinstance(record.outcomes, list):
            raise DecodeError("outcomes.reported: 'outcomes' must be a list")
        outcomes: list[Outcome] = []
        for raw in record.outcomes:
            if not isinstance(raw, dict):
                raise DecodeError("outcomes.reported: each outcome must be a map")
            outcomes.append(_build(Outcome, raw, "outcome"))
        record.outcomes = outcomes
    return record


def _build(cls: type, body: dict[str, Any], kind: str) -> Any:
    # The constructor itself rejects missing and unknown fields; the set arithmetic
    # runs only to phrase the error, keeping the common path to one call.
    try:
        return cls(**body)
    except TypeError as exc:
        missing = _REQUIRED[cls] - body.keys()
        if missing:
            raise DecodeError(f"{kind}: missing field(s) {', '.join(sorted(missing))}"
                              ) from None
        unknown = body.keys() - set(_FIELDS[cls])
        if unknown:
            raise DecodeError(f"{kind}: unknown field(s) {', '.join(sorted(unknown))}"
                              ) from None
        raise DecodeError(f"{kind}: {exc}") from None


def _check_tree(value: Any, max_depth: int, depth: int = 1) -> None:
    """Reject over-deep nesting and non-string map keys (after msgpack's own checks).

    Recursive with exact type tests: this runs on every record the engine reads, and is
    about twice as fast as an explicit stack with isinstance. Recursion is bounded by
    ``max_depth``, and msgpack itself refuses nesting beyond 1024 levels.
    """
    if depth > max_depth:
        raise DecodeError(f"nesting deeper than {max_depth} levels")
    if type(value) is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise DecodeError(f"map key {k!r} is not a string")
            t = type(v)
            if t is dict or t is list:
                _check_tree(v, max_depth, depth + 1)
    else:
        for v in value:
            t = type(v)
            if t is dict or t is list:
                _check_tree(v, max_depth, depth + 1)


def check_payload(value: Any, *, what: str, max_depth: int = 64,
                  max_bytes: int | None = None) -> int:
    """Check that ``value`` is JSON-compatible and within limits; return its encoded size.

    ``what`` names the value in the error ("step 'charge' output", "event data").
    """
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            raise PayloadError(f"{what} is nested deeper than {max_depth} levels")
        if node is None or isinstance(node, bool | int | str):
            if isinstance(node, int) and not -(2**63) <= node < 2**64:
                raise PayloadError(f"{what}{path}: integer {node} does not fit in 64 bits")
            continue
        if isinstance(node, float):
            if not math.isfinite(node):
                raise PayloadError(f"{what}{path}: {node} is not a finite number")
            continue
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise PayloadError(f"{what}{path}: key {k!r} is not a string")
                stack.append((v, depth + 1, f"{path}.{k}"))
            continue
        if isinstance(node, list | tuple):
            for i, v in enumerate(node):
                stack.append((v, depth + 1, f"{path}[{i}]"))
            continue
        raise PayloadError(
            f"{what}{path}: a value of type {type(node).__name__} is not JSON-serializable"
        )
    size = len(msgpack.packb(value, use_bin_type=True))
    if max_bytes is not None and size > max_bytes:
        raise PayloadError(f"{what} is {size} bytes, over the {max_bytes}-byte limit")
    return size
