"""Request bodies decoded by the API itself (engine/api/request_body.py), no Kafka:
each supported Content-Encoding, and every way a body can be wrong answered with its
status."""

from __future__ import annotations

import gzip
import zlib

import pytest

from engine.api.request_body import BodyProblem, decode

BODY = b'{"name": "shop/order", "data": {"n": 1}}'


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(("encoding", "raw"), [
    ("", BODY), ("identity", BODY), ("gzip", gzip.compress(BODY)),
    ("x-gzip", gzip.compress(BODY)), (" GZIP ", gzip.compress(BODY)),
    ("deflate", zlib.compress(BODY)), ("deflate", deflate_raw(BODY)),
])
def test_supported_encodings_decode(encoding: str, raw: bytes) -> None:
    assert decode(raw, encoding, 1000) == BODY


@pytest.mark.parametrize(("encoding", "raw", "status", "says"), [
    ("gzip", BODY, 400, "not valid 'gzip' data"),
    ("deflate", b"[]", 400, "'deflate' data"),  # read as raw deflate: cut short
    ("deflate", b"\x78\x9c garbage", 400, "not valid 'deflate' data"),
    ("gzip", gzip.compress(BODY)[:-12], 400, "cut short"),
    ("br", BODY, 415, "'br' is not supported"),
    ("gzip, deflate", BODY, 415, "not supported"),
    # A small body that expands past the limit is refused without expanding it all.
    ("gzip", gzip.compress(b" " * 10_000_000), 413, "decoded request body is over"),
])
def test_bad_bodies_are_refused_with_a_reason(encoding: str, raw: bytes, status: int,
                                              says: str) -> None:
    with pytest.raises(BodyProblem) as caught:
        decode(raw, encoding, 1000)
    assert caught.value.status == status and says in caught.value.message
