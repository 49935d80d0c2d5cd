"""Dead letters always fit in one record, whatever the record they describe."""

from __future__ import annotations

import pytest

from topics.codec import decode, encode
from topics.records import DEAD_LETTER_PREFIX_BYTES, DeadLetter, bounded_dead_letter

LIMIT = 1 << 20


def letter(value: bytes | None, key: bytes | None = b"k", reason: str = "bad") -> DeadLetter:
    return bounded_dead_letter(source_topic="p.events", partition=3, offset=41, key=key,
                               value=value, reason=reason, ts=5, max_record_bytes=LIMIT)


def test_a_value_that_fits_is_kept_whole_with_its_size() -> None:
    d = letter(b"abc")
    assert d.value == b"abc" and d.extra == {"value_bytes": 3, "truncated": False}
    assert (d.source_topic, d.partition, d.offset, d.reason) == ("p.events", 3, 41, "bad")


@pytest.mark.parametrize("size", [LIMIT - 16, LIMIT, 9 * LIMIT])
def test_values_near_or_over_the_limit_keep_a_bounded_prefix(size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    d = letter(value, key=b"K" * 50_000, reason="r" * 100_000)
    raw = encode(d)
    assert len(raw) <= LIMIT
    back = decode(raw, max_bytes=LIMIT)
    assert isinstance(back, DeadLetter)
    assert back.value == value[:DEAD_LETTER_PREFIX_BYTES]
    assert back.extra["value_bytes"] == size and back.extra["truncated"] is True
    assert back.extra["key_bytes"] == 50_000 and back.key == b"K" * 1024
    assert back.reason.startswith("r" * 100) and len(back.reason) < 2100


def test_no_value() -> None:
    assert letter(None).extra == {"value_bytes": 0, "truncated": False}
