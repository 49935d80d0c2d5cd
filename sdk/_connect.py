"""Reaching the broker: a bounded check before a worker starts, and librdkafka's log
lines summarised instead of repeated (a dead broker makes it log a connection failure
several times a second, for ever)."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient

from topics.settings import Settings

log = logging.getLogger("stepstream.kafka")

# How long a worker tries to reach its broker before it gives up with one line.
CONNECT_TIMEOUT_S = 8.0
# One line per distinct librdkafka message per this many seconds.
LOG_SUMMARY_INTERVAL_S = 30.0
HOW_TO_SET = "start `stepstream dev`, or set STEPSTREAM_BROKERS"

_THREAD_PREFIX = re.compile(r"^\[thrd:[^\]]*\]: ")
_NUMBERS = re.compile(r"\d+")
_MAX_KINDS = 1000


class BrokerUnreachableError(ConnectionError):
    """The broker did not answer in time, or lacks stepstream's topics. ``exit_code``
    is what ``stepstream worker`` exits with."""

    exit_code = 2


class LogSummary:
    """A librdkafka ``logger``: passes the first of each kind of message on to
    ``logger``, then counts repeats for ``interval`` seconds and reports the count with
    the next one after that. Kinds differ by text with the numbers ignored, so "after
    0ms" and "after 21ms" are one kind."""

    def __init__(self, logger: logging.Logger = log, *,
                 interval: float = LOG_SUMMARY_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, list[float]] = {}  # kind -> [window start, repeats]

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """Called by confluent-kafka as ``logger.log(level, "%s [%s] %s", fac, name, text)``."""
        try:
            text = fmt % args if args else fmt
        except (TypeError, ValueError):
            text = " ".join([fmt, *map(str, args)])
        if len(args) == 3:
            fac, name, body = (str(a) for a in args)
            text = f"librdkafka {fac} [{name}]: {_THREAD_PREFIX.sub('', body)}"
        kind = _NUMBERS.sub("#", text)
        now = self._clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return
            repeats = int(seen[1]) if seen is not None else 0
            if len(self._kinds) >= _MAX_KINDS:
                self._kinds.clear()
            self._kinds[kind] = [now, 0]
        if repeats:
            text += f" (and {repeats} more like it in the last {self.interval:g} s)"
        self.logger.log(level, "%s", text)


_SUMMARY = LogSummary()


def client_logging() -> dict[str, Any]:
    """librdkafka settings that send its logs, summarised, to the ``stepstream.kafka``
    logger instead of stderr (served by the client's poll calls)."""
    return {"logger": _SUMMARY}


async def wait_for_broker(settings: Settings, topics: Sequence[str], *, source: str,
                          stopping: Callable[[], bool],
                          timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Wait until the broker answers and holds ``topics``; False if ``stopping()``
    became true first. Raises :class:`BrokerUnreachableError` with one line naming the
    address, where it came from (``source``) and how to set it after ``timeout``."""
    brokers = settings.brokers or ""
    # log_level 0: this check reports the failure itself, once.
    admin = AdminClient(settings.client_config({
        "log_level": 0, "socket.connection.setup.timeout.ms": 2000}))
    deadline = time.monotonic() + timeout
    problem = "no answer"
    missing: list[str] = []
    while not stopping():
        try:
            # Short calls, so that a stop request is seen within half a second.
            meta = await asyncio.to_thread(admin.list_topics, timeout=0.5)
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            problem = err.str() if isinstance(err, confluent_kafka.KafkaError) else str(err)
            missing = []
        else:
            missing = [t for t in topics if t not in meta.topics]
            if not missing:
                return True
        if time.monotonic() >= deadline:
            if missing:
                raise BrokerUnreachableError(
                    f"topic {missing[0]!r} does not exist on the broker at {brokers} "
                    f"(from {source}); start `stepstream dev` or `stepstream engine` "
                    f"first (they create the topics), or set STEPSTREAM_PREFIX to match")
            raise BrokerUnreachableError(
                f"cannot reach the broker at {brokers} (from {source}) within "
                f"{timeout:g} s: {problem}; {HOW_TO_SET}")
        if missing:
            # The broker answered at once: the topics may be created any moment (an
            # engine starting beside this worker); ask again shortly.
            await asyncio.sleep(0.2)
    return False
