"""A user event, as stepstream accepts it from JSON: the rules that ``POST /e/{key}``
(engine/api/ingest.py) and the router (a JSON record any Kafka producer wrote to the
``events`` topic) share, so both accept and refuse exactly the same events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from topics.codec import PayloadError, check_payload, encode
from topics.ids import new_ulid
from topics.records import Event
from topics.settings import Settings

# Fields Inngest's SDKs put on an event that stepstream does not keep ("v" is a schema
# version string, "user" is user metadata); accepted and dropped so those senders work.
_IGNORED_FIELDS = frozenset({"v", "user"})
_KNOWN_FIELDS = frozenset({"name", "data", "id", "ts"})
# 9999-12-31T23:59:59.999Z: a later 'ts' is no date at all, and times derived from it
# (timeouts, ULIDs with 48 bits of milliseconds) would overflow downstream.
MAX_TS_MS = 253_402_300_799_999


class IngestError(Exception):
    """A batch that was refused (``status`` 400 bad input, 413 too large) or could not be
    stored (503); ``message`` is fit to show the sender."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def validate_event(raw: Any, settings: Settings, *, now: int, index: int = 0,
                   default_id: Callable[[], str] | None = None) -> Event:
    """Turn one raw JSON event into an :class:`Event`, filling ``id``/``ts``/``data``
    defaults (a missing id is ``default_id()`` if given, else a new ULID); raises
    :class:`IngestError` (400, or 413
    when it is too large)."""
    where = f"event {index}"
    if not isinstance(raw, dict):
        raise IngestError(f"{where}: must be a JSON object, got {_json_type(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise IngestError(f"{where}: 'name' is required and must be a non-empty string")
    where = f"event {index} ({name!r})"
    unknown = raw.keys() - _KNOWN_FIELDS - _IGNORED_FIELDS
    if unknown:
        raise IngestError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    data = raw.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise IngestError(f"{where}: 'data' must be a JSON object, got {_json_type(data)}")
    event_id = raw.get("id")
    # Inngest treats an empty id like a missing one, so senders that always set the
    # field keep working.
    if event_id is None or event_id == "":
        event_id = new_ulid(now) if default_id is None else default_id()
    elif not isinstance(event_id, str):
        raise IngestError(f"{where}: 'id' must be a string, got {_json_type(event_id)}")
    ts = raw.get("ts")
    # 0 is Inngest's "not set" for ts too (its SDKs' Event default).
    if ts is None or (ts == 0 and not isinstance(ts, bool)):
        ts = now
    elif isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_TS_MS:
        raise IngestError(
            f"{where}: 'ts' must be an integer from 0 to {MAX_TS_MS} (milliseconds since "
            f"the epoch, up to the year 9999)")
    try:
        check_payload(data, what=f"{where} data", max_depth=settings.max_depth)
    except PayloadError as exc:
        raise IngestError(str(exc)) from None
    except UnicodeEncodeError:
        raise IngestError(f"{where} data{invalid_unicode_at(data) or ''}: a string that is "
                          f"not valid Unicode (a lone surrogate such as \\ud800)") from None
    return Event(name=name, data=data, id=event_id, ts=ts)



def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__




def invalid_unicode_at(value: Any, path: str = "") -> str | None:
    """The path of the first string (or map key) in ``value`` that is not valid Unicode
    (a lone surrogate such as ``"\\ud800"``, which JSON escapes can spell but UTF-8
    cannot encode), or None if there is none. Iterative: ``value`` may be deep."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if not _encodable(node):
                return where or "(value)"
        elif isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and not _encodable(k):
                    return f"{where} key {k!r}"
                stack.append((v, f"{where}.{k}"))
        elif isinstance(node, list | tuple):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))
    return None


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def prepare_event(raw: Any, settings: Settings, *, now: int, index: int = 0,
                  default_id: Callable[[], str] | None = None) -> tuple[Event, bytes]:
    """:func:`validate_event`, then encode it and hold it to the event size limit:
    the event and its record value. Raises :class:`IngestError`."""
    event = validate_event(raw, settings, now=now, index=index, default_id=default_id)
    try:
        value = encode(event)
    except UnicodeEncodeError:
        where = invalid_unicode_at({"name": event.name, "id": event.id, "data": event.data})
        raise IngestError(f"event {index} {(where or '').lstrip('.')}: a string that is "
                          f"not valid Unicode (a lone surrogate such as \\ud800)") from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise IngestError(f"event {index} ({event.name!r}) cannot be stored: {exc}") from None
    if len(value) > settings.max_event_bytes:
        raise IngestError(
            f"event {index} ({event.name!r}) is {len(value)} bytes encoded, over the "
            f"{settings.max_event_bytes}-byte limit", 413)
    return event, value
