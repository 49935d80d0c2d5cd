"""Pure helpers for what arrives over HTTP: JSON bodies with hard limits, values that
cannot go on the wire, and Inngest's ``x-inngest-event-id-seed`` header.

Nothing here does I/O, so the event ingest can run it in another process (see
:meth:`engine.api.ingest.EventIngest.send_body`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NamedTuple

from topics.ids import _ulid

# Inngest's own limit (``consts.MaxEvents``): a sender that works against Inngest works here.
MAX_EVENTS_PER_REQUEST = 5000
SEED_HEADER = "x-inngest-event-id-seed"
# The latest time a ULID can carry (48 bits of milliseconds).
_MAX_ULID_MS = (1 << 48) - 1


class BodyError(ValueError):
    """A request body that is not acceptable JSON; ``str(err)`` is fit for the sender."""


def load_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON body; raises :class:`BodyError` with the reason.

    Nesting is bounded by the interpreter's recursion limit (about 1,000 levels): the C
    decoder raises RecursionError past it, which must be a 400 and not a crash.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not valid UTF-8: {exc}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise BodyError("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from None


class Seed(NamedTuple):
    """A parsed ``x-inngest-event-id-seed``: milliseconds and 10 bytes of entropy."""

    ms: int
    entropy: bytes


def parse_seed(value: str | None) -> Seed | None:
    """Parse ``"<millis>,<base64 of 10 bytes>"`` as Inngest's SDKs send it. Anything
    else gives None, and the events get fresh ids: Inngest ignores a malformed seed the
    same way, and refusing the request would break senders for no gain."""
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
        return None
    ms = int(parts[0])
    if not 0 < ms <= _MAX_ULID_MS:
        return None
    try:
        entropy = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(entropy) != 10:
        return None
    return Seed(ms, entropy)


def seeded_event_id(seed: Seed, index: int) -> str:
    """The id of the ``index``-th event (0-based) of a request sent with ``seed``.

    As the Inngest server derives it, so a retried request gets the same ids: a ULID
    whose time is the seed's milliseconds and whose entropy is the seed's, with the
    event's 1-based position added to the last four bytes (mod 2**32).
    """
    tail = (int.from_bytes(seed.entropy[6:10], "big") + index + 1) & 0xFFFFFFFF
    return _ulid(seed.ms, seed.entropy[:6] + tail.to_bytes(4, "big"))
