"""Reading a request body: its size limit and its ``Content-Encoding``, decoded here.

aiohttp can decode bodies itself, but when a body that does not decode arrives after
the headers (as most clients send it), its parser reports the error for a *next*
request while the handler waits for this one's body for ever: the request is never
answered (found by the fault campaign's HTTP fuzzing; aiohttp 3.14). So the server is
built with ``auto_decompress=False`` (:data:`HANDLER_ARGS`) and the body is decoded
here, with the decoded size bounded as well, so a small compressed body cannot expand
past the limit.
"""

from __future__ import annotations

import logging
import zlib

from aiohttp import web

log = logging.getLogger("stepstream.api")

# Passed to web.Application: the server hands over bodies as they were sent.
HANDLER_ARGS = {"auto_decompress": False}

# Encodings a client may send; the value is zlib's wbits for them.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
          "deflate": zlib.MAX_WBITS}


class BodyProblem(Exception):
    """A body that cannot be read: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, decoded per its Content-Encoding, at most ``limit`` bytes both
    as sent and decoded. Raises :class:`BodyProblem` (400, 413 or 415)."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyProblem(413, f"request body is {request.content_length} bytes, over "
                               f"the {limit}-byte limit")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyProblem(413, f"request body is over the {limit}-byte limit") from None
    except web.RequestPayloadError as exc:
        raise BodyProblem(400, f"the request body could not be read: {exc}") from None
    return decode(raw, request.headers.get("Content-Encoding", ""), limit)


def decode(raw: bytes, encoding: str, limit: int) -> bytes:
    """``raw`` decoded per ``encoding`` (gzip, deflate, identity or none), at most
    ``limit`` bytes once decoded. Raises :class:`BodyProblem`."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return raw
    wbits = _WBITS.get(name)
    if wbits is None:
        raise BodyProblem(415, f"Content-Encoding {encoding!r} is not supported: send "
                               "plain JSON, or gzip or deflate it")
    if name == "deflate" and raw and (raw[0] & 0x0F) != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, without the zlib header (some clients)
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(raw, limit + 1)
        if len(out) <= limit and not decoder.unconsumed_tail:
            out += decoder.flush()
    except zlib.error as exc:
        log.debug("undecodable %s body: %s", name, exc)
        raise BodyProblem(400, f"the body is not valid {encoding!r} data, as its "
                               "Content-Encoding header says; send plain JSON without "
                               "that header, or encode the body") from None
    if len(out) > limit or decoder.unconsumed_tail:
        raise BodyProblem(413, f"the decoded request body is over the {limit}-byte limit")
    if not decoder.eof:
        raise BodyProblem(400, f"the body is cut short: its {encoding!r} data ends early")
    return out
