"""``sdk.Client``: declares functions, sends events, makes workers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sdk.config import load_settings
from sdk.durations import wall_ms
from sdk.errors import ConfigError, SendError
from sdk.events import Event, TriggerEvent, as_list, to_record
from sdk.function import DEFAULT_RETRIES, Function, Handler, check_handler, make_config
from sdk.producer import Producer
from topics import records
from topics.catalog import Catalog, partition_for
from topics.codec import encode
from topics.ids import new_ulid
from topics.settings import Settings

if TYPE_CHECKING:
    from sdk.worker import Worker

# librdkafka reports every record within message.timeout.ms (default 300 s); past
# that plus a margin, something is wrong with the process rather than the broker.
_DELIVERY_WAIT_S = 330.0


class Client:
    """An app: its functions, and the way to send events to the engine.

    Brokers come from ``brokers``, else ``STEPSTREAM_BROKERS``, else
    ``KAFKA_BOOTSTRAP_SERVERS``, else the file ``stepstream dev`` writes, else the
    default dev address. They are resolved when first needed, so a client can be
    created (imported) before its broker is up. ``settings`` replaces the
    ``STEPSTREAM_*`` environment entirely.
    """

    def __init__(self, app_id: str, *, brokers: str | None = None,
                 settings: Settings | None = None) -> None:
        if not isinstance(app_id, str) or not app_id.strip():
            raise ConfigError("app_id must be a non-empty string")
        self.app_id = app_id
        self._brokers = brokers
        self._settings = settings
        self._functions: dict[str, Function] = {}
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    # -- configuration ---------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in effect (resolved on first use, then fixed)."""
        with self._lock:
            if self._settings is None:
                self._settings = load_settings(self._brokers)
            elif not self._settings.brokers:
                self._settings = self._settings.with_brokers(
                    load_settings(self._brokers).brokers or "")
            return self._settings

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.settings)

    @property
    def functions(self) -> list[Function]:
        """The functions declared on this client, in declaration order."""
        return list(self._functions.values())

    def get_function(self, fn_id: str) -> Function | None:
        """A function by registered id (``app-fn``) or by the id given to create_function."""
        fn = self._functions.get(fn_id)
        if fn is None and fn_id.startswith(self.app_id + "-"):
            fn = self._functions.get(fn_id[len(self.app_id) + 1:])
        return fn

    def create_function(
        self,
        *,
        fn_id: str,
        trigger: TriggerEvent | list[TriggerEvent],
        retries: int = DEFAULT_RETRIES,
        name: str | None = None,
    ) -> Callable[[Handler], Function]:
        """Decorator declaring a durable function.

        ``trigger`` is one :class:`~sdk.events.TriggerEvent` or a list; ``retries``
        counts retries after the first attempt. The function is registered as
        ``f"{app_id}-{fn_id}"`` when a worker starts.
        """
        config = make_config(app_id=self.app_id, fn_id=fn_id, trigger=trigger,
                             retries=retries, name=name)
        if fn_id in self._functions:
            raise ConfigError(f"app {self.app_id!r} already has a function {fn_id!r}")

        def decorate(handler: Handler) -> Function:
            check_handler(handler, fn_id)
            if fn_id in self._functions:
                raise ConfigError(f"app {self.app_id!r} already has a function {fn_id!r}")
            function = Function(handler, config)
            self._functions[fn_id] = function
            return function

        return decorate

    # -- sending ---------------------------------------------------------------------

    def _records(self, events: Event | list[Event]) -> list[records.Event]:
        settings = self.settings
        now = wall_ms()
        # Check every event before producing any, so a bad one sends nothing.
        return [to_record(e, default_id=new_ulid(now), now_ms=now, settings=settings)
                for e in as_list(events)]

    def _get_producer(self) -> Producer:
        settings = self.settings
        with self._lock:
            if self._producer is None:
                self._producer = Producer(settings, client_id=f"stepstream-{self.app_id}")
            return self._producer

    def _produce(self, wire: list[records.Event]) -> list[concurrent.futures.Future[None]]:
        producer = self._get_producer()
        topic = Catalog(producer.settings).events
        n = producer.settings.partitions
        return [producer.produce(topic, e.id, encode(e), partition_for(e.id, n)) for e in wire]

    def send(self, events: Event | list[Event]) -> list[str]:
        """Send one event or a list; return their ids once the broker acknowledged all.

        Blocks until delivery. Raises :class:`~sdk.errors.EventError` for an invalid
        event (nothing is sent) and :class:`~sdk.errors.SendError` if delivery failed.
        """
        wire = self._records(events)
        futures = self._produce(wire)
        done, _ = concurrent.futures.wait(futures, timeout=_DELIVERY_WAIT_S)
        _raise_failures(wire, [f.exception() if f in done else TimeoutError("no delivery report")
                               for f in futures])
        return [e.id for e in wire]

    async def send_async(self, events: Event | list[Event]) -> list[str]:
        """Like :meth:`send`, without blocking the event loop while waiting."""
        wire = self._records(events)
        # Producing can block briefly when the local queue is full.
        futures = await asyncio.to_thread(self._produce, wire)
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures),
                                       return_exceptions=True)
        _raise_failures(wire, [r if isinstance(r, BaseException) else None for r in results])
        return [e.id for e in wire]

    # -- workers and lifetime --------------------------------------------------------

    def worker(self, concurrency: int = 100, **options: Any) -> Worker:
        """A worker running this app's functions; see :class:`sdk.worker.Worker`."""
        from sdk.worker import Worker  # the worker pulls in more; most senders never need it

        return Worker(self, concurrency=concurrency, **options)

    def close(self, timeout: float = 30.0) -> None:
        """Deliver anything queued and release the producer."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<sdk.Client app_id={self.app_id!r} functions={list(self._functions)}>"


def _raise_failures(wire: list[records.Event], errors: list[BaseException | None]) -> None:
    failed = [(e, err) for e, err in zip(wire, errors, strict=True) if err is not None]
    if not failed:
        return
    first_event, first_error = failed[0]
    raise SendError(
        f"{len(failed)} of {len(wire)} event(s) were not acknowledged by the broker "
        f"(they may or may not be stored; resending with the same ids is safe); "
        f"first: {first_event.name!r} id {first_event.id}: {first_error}"
    )
