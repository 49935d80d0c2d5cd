"""``sdk.Client``: declares functions, sends events, makes workers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sdk._client_options import ClientOptions, check_production_brokers, reject_unsupported
from sdk._config import load_settings
from sdk._durations import wall_ms
from sdk._errors import ConfigError, SendError
from sdk._events import Event, TriggerEvent, as_list, to_record
from sdk._flow import (
    Batch,
    Concurrency,
    Debounce,
    FlowOptions,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
)
from sdk._function import (
    DEFAULT_RETRIES,
    Function,
    FunctionConfig,
    Handler,
    Trigger,
    check_handler,
    make_config,
)
from sdk._middleware import (
    MiddlewareFactory,
    check_middleware,
    send_with_hooks,
    send_with_hooks_sync,
)
from sdk._options import Cancel, Timeouts
from sdk._producer import Producer
from sdk._serializer import output_type_for
from topics import records
from topics.catalog import Catalog, event_partition
from topics.codec import encode
from topics.ids import new_ulid
from topics.settings import Settings

if TYPE_CHECKING:
    from sdk._worker import Worker

# librdkafka reports every record within message.timeout.ms (default 300 s); past
# that plus a margin, something is wrong with the process rather than the broker.
_DELIVERY_WAIT_S = 330.0


class Client:
    """An app: its functions, and the way to send events to the engine.

    Brokers come from ``brokers``, else ``STEPSTREAM_BROKERS``, else
    ``KAFKA_BOOTSTRAP_SERVERS``, else the file ``stepstream dev`` writes, else the
    default dev address. They are resolved when first needed, so a client can be
    created (imported) before its broker is up. ``settings`` replaces the
    ``STEPSTREAM_*`` environment entirely. ``middleware`` lists :class:`~sdk.Middleware`
    classes run for every function and every send (docs/middleware.md).
    """

    def __init__(self, app_id: str, *, brokers: str | None = None,
                 settings: Settings | None = None,
                 middleware: list[MiddlewareFactory] | None = None,
                 logger: logging.Logger | None = None,
                 is_production: bool | None = None,
                 event_key: str | None = None,
                 env: str | None = None,
                 **unsupported: Any) -> None:
        """Inngest's constructor arguments that mean something here are accepted (see
        :mod:`sdk._client_options`): ``middleware`` lists :class:`~sdk.Middleware`
        classes, ``logger`` is what ``ctx.logger`` writes to, ``is_production=True``
        refuses the dev broker fallback, ``event_key`` is kept for HTTP senders
        (``POST /e/{key}``), and ``env`` selects the topics of an environment. The
        others raise a TypeError saying why they have no meaning here.
        """
        reject_unsupported(unsupported)
        if not isinstance(app_id, str) or not app_id.strip():
            raise ConfigError("app_id must be a non-empty string")
        # Run before each function's own middleware (sdk.Middleware).
        self.middleware = list(check_middleware(middleware, "Client"))
        self.app_id = app_id
        self._brokers = brokers
        self._settings = settings
        options = ClientOptions.check(logger=logger, is_production=is_production,
                                      event_key=event_key, env=env)
        self.logger = options.logger
        self.is_production = options.is_production
        self.event_key = options.event_key
        self.env = options.env
        self._options_applied = False
        self._functions: dict[str, Function] = {}
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    # -- configuration ---------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in effect (resolved on first use, then fixed)."""
        with self._lock:
            settings_given = None if self._options_applied else self._settings
            if self._settings is None:
                self._settings = load_settings(self._brokers)
            elif not self._settings.brokers:
                self._settings = self._settings.with_brokers(
                    load_settings(self._brokers).brokers or "")
            if not self._options_applied:
                # Once: env's topic prefix, and is_production's check of the brokers.
                self._settings = ClientOptions.with_env(self._settings, self.env)
                if self.is_production:
                    check_production_brokers(
                        self._brokers or (settings_given.brokers if settings_given else None))
                self._options_applied = True
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
        trigger: Trigger | list[Trigger],
        retries: int = DEFAULT_RETRIES,
        name: str | None = None,
        cancel: list[Cancel] | None = None,
        timeouts: Timeouts | None = None,
        idempotency: str | None = None,
        on_failure: Handler | None = None,
        concurrency: Concurrency | list[Concurrency] | None = None,
        throttle: Throttle | None = None,
        rate_limit: RateLimit | None = None,
        priority: Priority | None = None,
        singleton: Singleton | None = None,
        batch_events: Batch | None = None,
        debounce: Debounce | None = None,
        middleware: list[MiddlewareFactory] | None = None,
        output_type: Any = None,
        output_serializer: Any = None,
    ) -> Callable[[Handler], Function]:
        """Decorator declaring a durable function.

        ``trigger`` is a :class:`~sdk.TriggerEvent`, a
        :class:`~sdk.TriggerCron`, or a list mixing them; ``retries`` counts
        retries after the first attempt. ``cancel`` lists :class:`~sdk.Cancel`
        rules (events that cancel a running run), ``timeouts`` bounds how long a run may
        wait to start and take to finish (:class:`~sdk.Timeouts`), and
        ``idempotency`` is a CEL expression over ``event`` ("event.data.payment_id"):
        at most one run per value of it within 24 hours.

        Flow control, as in Inngest: ``concurrency`` (:class:`~sdk.Concurrency`, or a
        list of up to two), ``throttle`` (:class:`~sdk.Throttle`), ``rate_limit``
        (:class:`~sdk.RateLimit`), ``priority`` (:class:`~sdk.Priority`) and
        ``singleton`` (:class:`~sdk.Singleton`), ``batch_events`` (:class:`~sdk.Batch`:
        one run per batch of events, in ``ctx.events``) and ``debounce``
        (:class:`~sdk.Debounce`: one run per burst of events). As in Inngest, batching
        cannot be combined with ``idempotency``, ``rate_limit``, ``cancel``,
        ``priority``, ``debounce`` or ``singleton``. The failure handler gets none of
        them.

        ``on_failure`` is a handler (``async def``, or ``def``) run once a run of this
        function has failed for good. As in Inngest it is a function of its own in the same app,
        ``f"{fn_id}-failure"`` named ``f"{name} (on failure)"``, triggered by the
        ``stepstream/function.failed`` event of this function; its ``ctx.event.data``
        holds ``function_id``, ``run_id``, ``error`` (name, message, stack, code) and
        ``event`` (the failed run's triggering event). It has the same ``retries``.

        ``middleware`` lists :class:`~sdk.Middleware` classes run for this function
        (and its failure handler) after the client's.

        ``output_type`` (or ``output_serializer``, Inngest's newer name) is a pydantic
        type the function's return value is converted with: it is stored as JSON
        (needs ``stepstream[pydantic]``).

        The function is registered as ``f"{app_id}-{fn_id}"`` when a worker starts.
        Everything is checked here: a :class:`~sdk.ConfigError` names the
        function and the problem.
        """
        config = make_config(app_id=self.app_id, fn_id=fn_id, trigger=trigger,
                             retries=retries, name=name, cancel=cancel, timeouts=timeouts,
                             idempotency=idempotency,
                             flow=FlowOptions(concurrency, throttle, rate_limit, priority,
                                              singleton, batch_events, debounce))
        typed = output_type_for(output_type, output_serializer, f"function {fn_id!r}")
        failure_config = None
        if on_failure is not None:
            _check_on_failure(on_failure, fn_id)
            failure_config = self._failure_config(config)
        self._check_free(config, failure_config)
        own = check_middleware(middleware, f"function {fn_id!r}")

        def decorate(handler: Handler) -> Function:
            check_handler(handler, fn_id)
            self._check_free(config, failure_config)
            function = Function(handler, config)
            function.client, function.middleware = self, own
            function.output_type = typed
            self._functions[fn_id] = function
            if failure_config is not None and on_failure is not None:
                failure = Function(on_failure, failure_config)
                failure.client, failure.middleware = self, own
                self._functions[failure_config.fn_id] = failure
                function.on_failure = failure
            return function

        return decorate

    def _failure_config(self, config: FunctionConfig) -> FunctionConfig:
        # A CEL string literal: JSON's escapes (\" \\ \n \uXXXX) are CEL's too.
        literal = json.dumps(config.id, ensure_ascii=False)
        return make_config(
            app_id=self.app_id, fn_id=f"{config.fn_id}-failure",
            trigger=TriggerEvent(event=records.FUNCTION_FAILED_EVENT,
                                 expression=f"event.data.function_id == {literal}"),
            retries=config.retries, name=f"{config.name} (on failure)",
        )

    def _check_free(self, *configs: FunctionConfig | None) -> None:
        for c in configs:
            if c is not None and c.fn_id in self._functions:
                raise ConfigError(f"app {self.app_id!r} already has a function {c.fn_id!r}")

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
        return [producer.produce(topic, e.id, encode(e), event_partition(e.name, n))
                for e in wire]

    async def send(self, events: Event | list[Event]) -> list[str]:
        """Send one event or a list; return their ids once the broker acknowledged all.

        A coroutine, as in Inngest (``await client.send(...)``); :meth:`send_sync` is the
        blocking form. Raises :class:`~sdk.EventError` for an invalid event (nothing is
        sent) and :class:`~sdk.SendError` if delivery failed. The client's middleware
        sees the events first (``before_send_events``).
        """
        return await send_with_hooks(self, events, self._send_now_async)

    def send_sync(self, events: Event | list[Event]) -> list[str]:
        """Like :meth:`send`, blocking until the broker acknowledged every event (for
        sync code: scripts, Flask or Django views)."""
        return send_with_hooks_sync(self, events, self._send_now)

    def _send_now(self, events: Event | list[Event]) -> list[str]:
        wire = self._records(events)
        futures = self._produce(wire)
        done, _ = concurrent.futures.wait(futures, timeout=_DELIVERY_WAIT_S)
        _raise_failures(wire, [f.exception() if f in done else TimeoutError("no delivery report")
                               for f in futures])
        return [e.id for e in wire]

    async def _send_now_async(self, events: Event | list[Event]) -> list[str]:
        wire = self._records(events)
        # Producing can block briefly when the local queue is full.
        futures = await asyncio.to_thread(self._produce, wire)
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures),
                                       return_exceptions=True)
        _raise_failures(wire, [r if isinstance(r, BaseException) else None for r in results])
        return [e.id for e in wire]

    async def send_async(self, events: Event | list[Event]) -> list[str]:
        """Deprecated: ``send`` is the coroutine now (as in Inngest); use ``await
        client.send(...)``. Kept one release so code written for 0.x keeps working."""
        warnings.warn("Client.send_async is deprecated: `await client.send(...)` is the "
                      "coroutine now, and client.send_sync(...) the blocking form",
                      DeprecationWarning, stacklevel=2)
        return await self.send(events)

    # -- workers and lifetime --------------------------------------------------------

    def worker(self, concurrency: int = 100, **options: Any) -> Worker:
        """A worker running this app's functions; see :class:`sdk.Worker`."""
        from sdk._worker import Worker  # the worker pulls in more; most senders never need it

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


def _check_on_failure(handler: object, fn_id: str) -> None:
    # async def (taking a Context) or def (taking a ContextSync), like the function.
    check_handler(handler, fn_id, what="on_failure")


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
