"""App sync: a worker starting makes the registry hold exactly its app's functions.

As Inngest's app sync does: the worker publishes every function its app defines and
removes the functions of that app it no longer defines, so their cron stops and new
events no longer start them. A removal is a tombstone on the compacted ``functions``
topic (key = function id, no value), the same record ``stepstream functions remove``
writes; every engine's registry reader drops the function when it reads it.

To know what to remove, the worker reads the ``functions`` topic (one small, compacted
partition) to its end before registering. Two workers of one app with different
function sets starting together are an app deployed in two versions at once: the last
to start wins, as with Inngest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

import confluent_kafka

from sdk._durations import wall_ms
from sdk._function import Function
from sdk._producer import DeliveryError, Producer
from topics.catalog import Catalog
from topics.codec import DecodeError, decode, encode
from topics.records import FunctionRegistered
from topics.settings import Settings

log = logging.getLogger("stepstream.worker")

# Reading the registry took about 20 ms on the dev broker (50 definitions); a broker
# that does not answer within this long fails the registration that follows anyway.
READ_TIMEOUT_S = 5.0


def registered_ids(settings: Settings, app_id: str, timeout_s: float = READ_TIMEOUT_S
                   ) -> set[str] | None:
    """The ids of the functions the registry holds for ``app_id`` (the latest record of
    each id wins; a tombstone removes it), or None if the ``functions`` topic could not
    be read to its end within ``timeout_s``. Blocking."""
    catalog = Catalog(settings)
    consumer = confluent_kafka.Consumer(settings.client_config({
        # Only assign() is used: the group is never joined and nothing is committed.
        "group.id": f"{settings.prefix}app-sync.{uuid.uuid4().hex[:8]}",
        **settings.consumer_tuning(),
        "enable.partition.eof": True,
    }))
    apps: dict[str, str] = {}  # function id -> its app, for ids not removed
    try:
        # Offset 0, not OFFSET_BEGINNING: resolving that took 0.5 s on the dev broker
        # (16 ms from 0). Where compaction removed offset 0, auto.offset.reset=earliest
        # (consumer_tuning) starts at the first record kept.
        consumer.assign([confluent_kafka.TopicPartition(catalog.functions, 0, 0)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # consume(n, t) waits for n records or t; poll() returns on the first.
            first = consumer.poll(0.1)
            for m in [] if first is None else [first, *consumer.consume(500, 0)]:
                err = m.error()
                if err is not None:
                    if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                        return {fn_id for fn_id, app in apps.items() if app == app_id}
                    continue
                _apply(apps, m.key(), m.value(), settings)
        return None
    finally:
        consumer.close()


def _apply(apps: dict[str, str], key: bytes | None, value: bytes | None,
           settings: Settings) -> None:
    if value is None:
        if key is not None:
            apps.pop(key.decode(errors="replace"), None)
        return
    try:
        rec = decode(value, max_bytes=settings.max_record_bytes, max_depth=settings.max_depth,
                     expect=(FunctionRegistered,))
    except DecodeError:
        return  # the engine dead-letters it; it names no function of ours
    assert isinstance(rec, FunctionRegistered)
    apps[rec.fn_id] = rec.app_id


async def remove_stale(producer: Producer, settings: Settings, app_id: str,
                       defined: Iterable[str]) -> list[str]:
    """Remove the functions of ``app_id`` the registry holds and ``defined`` lacks (a
    tombstone each, acknowledged by the broker); returns their ids. If the registry
    cannot be read, nothing is removed (logged): they stay until the next start.
    Raises :class:`sdk._producer.DeliveryError` if a tombstone is not stored."""
    known = await asyncio.to_thread(registered_ids, settings, app_id)
    if known is None:
        log.warning("app %r: could not read the function registry within %.0f s; "
                    "functions it no longer defines are not removed", app_id,
                    READ_TIMEOUT_S)
        return []
    stale = sorted(known - set(defined))
    if stale:
        log.info("app %r: removing function(s) it no longer defines: %s", app_id,
                 ", ".join(stale))
    topic = Catalog(settings).functions
    await asyncio.gather(*(producer.send(topic, fn_id, None, partition=0) for fn_id in stale))
    return stale


async def register(producer: Producer, settings: Settings, app_id: str,
                   functions: Sequence[Function], *, stopping: Callable[[], bool]) -> bool:
    """Publish ``functions`` and remove the app's others (:func:`remove_stale`); False if
    ``stopping()`` became true first (a signal must stop a worker in every phase, and a
    delivery can take minutes). Raises ``RuntimeError`` naming the topic and the broker
    if a registration is not stored."""
    topic = Catalog(settings).functions
    now = wall_ms()
    sends = asyncio.gather(*(
        producer.send(topic, fn.id, encode(fn.config.registration(now)), partition=0)
        for fn in functions
    ))
    while not (await asyncio.wait({sends}, timeout=0.1))[0]:
        if stopping():
            sends.cancel()
            with contextlib.suppress(asyncio.CancelledError, DeliveryError):
                await sends
            return False
    try:
        sends.result()
        # App sync: the functions of this app it no longer defines are removed.
        await remove_stale(producer, settings, app_id, [fn.id for fn in functions])
        return True
    except DeliveryError as exc:
        raise RuntimeError(
            f"worker could not register its functions on {topic} "
            f"(are the topics created and the broker at {settings.brokers}?): {exc}"
        ) from exc
