"""Events as users write them, triggers, and their checked conversion to wire records."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sdk._durations import Duration, duration_ms
from sdk._errors import ConfigError, EventError
from topics import records
from topics.codec import PayloadError, check_payload
from topics.settings import Settings


@dataclass(slots=True)
class Event:
    """A named fact with data.

    ``id`` and ``ts`` (epoch milliseconds) are filled in when the event is sent if
    left unset: ``None``, or ``""`` and ``0`` as Inngest writes them. Events with the
    same id within 24 hours start at most one run, so set ``id`` yourself to make a
    send idempotent. ``v`` is set on the event of a run started by
    ``step.invoke(..., v=...)``.
    """

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    ts: int | None = None
    # Set on an event made from a record of a Kafka topic (sdk.TriggerTopic): where it
    # came from, {"topic", "partition", "offset", "timestamp", "key", "headers"}; key
    # and header values are text (UTF-8, invalid bytes replaced), or None.
    source: dict[str, Any] | None = None
    v: str | None = None

    @staticmethod
    def from_wire(body: Any) -> Event:
        """An :class:`Event` from its wire form (a map with name, data, id, ts)."""
        if not isinstance(body, dict):
            return Event(name="", data={})
        data = body.get("data")
        ts = body.get("ts")
        source = body.get("source")
        return Event(
            name=str(body.get("name") or ""),
            data=data if isinstance(data, dict) else {},
            id=body.get("id") if isinstance(body.get("id"), str) else None,
            ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
            source=source if isinstance(source, dict) else None,
            v=body.get("v") if isinstance(body.get("v"), str) else None,
        )


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """Run the function for each event whose name matches ``event``.

    ``event`` may contain ``*`` wildcards ("shop/order.*"). ``expression`` is an
    optional CEL filter over ``event`` ("event.data.total > 0").
    """

    event: str
    expression: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event.strip():
            raise ConfigError("TriggerEvent.event must be a non-empty event name")
        if self.expression is not None and (
            not isinstance(self.expression, str) or not self.expression.strip()
        ):
            raise ConfigError("TriggerEvent.expression must be a non-empty string or None")

    def to_wire(self) -> dict[str, Any]:
        """The trigger as ``FunctionRegistered.triggers`` carries it."""
        return {"event": self.event, "expression": self.expression}


@dataclass(frozen=True, slots=True)
class TriggerCron:
    """Run the function on a schedule.

    ``cron`` is a cron expression with 5 fields (minute hour day-of-month month
    day-of-week), or 6 with seconds last, optionally prefixed by a time zone:
    ``"TZ=Europe/Paris 0 9 * * 1-5"`` (UTC without one); ``@daily``, ``@hourly`` and the
    other ``@`` shorthands work too. Daylight-saving changes are handled as
    :mod:`topics.cron` describes. The run's ``ctx.cron_tick`` is the tick it is for, and
    ``ctx.event`` a ``stepstream/scheduled.timer`` event.

    ``jitter`` (ms, timedelta or "30s"; at most a day) delays each tick's run by a
    pseudo-random amount between 0 and ``jitter``, so many schedules on the same minute
    do not all start at once. The delay is derived from the function id and the tick,
    so every engine computes the same one; ``ctx.cron_tick`` stays the scheduled tick.
    A delay never carries a tick past the next one: keep ``jitter`` shorter than the
    schedule's interval.
    """

    cron: str
    jitter: Duration | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.cron, str) or not self.cron.strip():
            raise ConfigError("TriggerCron.cron must be a non-empty cron expression")
        if self.jitter is not None:
            try:
                ms = duration_ms(self.jitter)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"TriggerCron.jitter: {exc}") from None
            if ms > MAX_JITTER_MS:
                raise ConfigError(f"TriggerCron.jitter must be at most a day, got {ms} ms")

    @property
    def jitter_ms(self) -> int:
        """``jitter`` in milliseconds (0 without one)."""
        return 0 if self.jitter is None else duration_ms(self.jitter)

    def to_wire(self) -> dict[str, Any]:
        """The trigger as ``FunctionRegistered.triggers`` carries it (``jitter_ms`` only
        when set, so schedules without one register as before)."""
        if self.jitter_ms:
            return {"cron": self.cron, "jitter_ms": self.jitter_ms}
        return {"cron": self.cron}


MAX_JITTER_MS = 24 * 3600 * 1000

# Kafka's rule for topic names.
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
TOPIC_STARTS = ("earliest", "latest")


@dataclass(frozen=True, slots=True)
class TriggerTopic:
    """Run the function for each record of an existing Kafka topic ``topic`` (one that
    stepstream does not own): the record's JSON value becomes ``ctx.event.data`` (a
    value that is not a JSON object is ``{"value": ...}``), the event is named
    ``event`` (default ``kafka/<topic>``), and ``ctx.event.source`` holds the record's
    topic, partition, offset, timestamp, key and headers.

    Each record starts its run exactly once, also across engine restarts: the event id
    derives from topic, partition and offset. The engine reads the topic in its own
    consumer group; ``start`` says where it begins the first time: ``"earliest"`` (the
    topic's retained history, the default: nothing produced before the engine first
    reads it is missed) or ``"latest"``. ``expression`` is a CEL filter over ``event``.
    """

    topic: str
    event: str | None = None
    expression: str | None = None
    start: str = "earliest"

    def __post_init__(self) -> None:
        if not isinstance(self.topic, str) or not _TOPIC_NAME.match(self.topic):
            raise ConfigError(f"TriggerTopic.topic must be a Kafka topic name (letters, "
                              f"digits, '.', '_', '-'; at most 249), got {self.topic!r}")
        if self.event is not None and (not isinstance(self.event, str)
                                       or not self.event.strip() or "*" in self.event):
            raise ConfigError("TriggerTopic.event must be a non-empty event name without "
                              "wildcards, or None")
        if self.expression is not None and (
            not isinstance(self.expression, str) or not self.expression.strip()
        ):
            raise ConfigError("TriggerTopic.expression must be a non-empty string or None")
        if self.start not in TOPIC_STARTS:
            raise ConfigError(f"TriggerTopic.start must be one of {TOPIC_STARTS}, "
                              f"got {self.start!r}")

    @property
    def event_name(self) -> str:
        """The name of the events its records become."""
        return self.event or f"kafka/{self.topic}"

    def to_wire(self) -> dict[str, Any]:
        """The trigger as ``FunctionRegistered.triggers`` carries it."""
        return {"topic": self.topic, "event": self.event_name, "expression": self.expression,
                "start": self.start}


def to_record(event: Event, *, default_id: str, now_ms: int, settings: Settings) -> records.Event:
    """Check ``event`` and build its wire record; raises :class:`EventError`.

    ``default_id`` is used when the event has no id, ``now_ms`` when it has no ts.
    """
    if not isinstance(event, Event):
        raise EventError(f"expected an sdk.Event, got {type(event).__name__}")
    if not isinstance(event.name, str) or not event.name.strip():
        raise EventError(f"event name must be a non-empty string, got {event.name!r}")
    if not isinstance(event.data, dict):
        raise EventError(
            f"event {event.name!r}: data must be a dict, got {type(event.data).__name__}"
        )
    # Inngest's "not set" values: id "" and ts 0.
    event_id = event.id if event.id != "" else None
    ts = event.ts if event.ts != 0 else None
    if event_id is not None and not isinstance(event_id, str):
        raise EventError(f"event {event.name!r}: id must be a string, or None or \"\" "
                         f"(not set)")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int)):
        raise EventError(f"event {event.name!r}: ts must be epoch milliseconds (int), or "
                         "None or 0 (not set)")
    what = f"event {event.name!r} data"
    try:
        size = check_payload(event.data, what=what, max_depth=settings.max_depth)
    except PayloadError as exc:
        raise EventError(str(exc)) from None
    if size > settings.max_event_bytes:
        raise EventError(
            f"event {event.name!r} is too large: its data is {size} bytes, over the "
            f"{settings.max_event_bytes}-byte limit (max_event_bytes)"
        )
    return records.Event(
        name=event.name,
        data=event.data,
        id=event_id if event_id is not None else default_id,
        ts=ts if ts is not None else now_ms,
    )


def as_list(events: Event | list[Event] | tuple[Event, ...]) -> list[Event]:
    """One event or a sequence of them, as a list; rejects anything else."""
    if isinstance(events, Event):
        return [events]
    if isinstance(events, list | tuple):
        return list(events)
    raise EventError(f"expected an sdk.Event or a list of them, got {type(events).__name__}")
