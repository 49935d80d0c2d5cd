"""What ``stepstream dev`` prints while it runs: one line per run that fails, per step
attempt that fails and is retried, and per run that is cancelled.

The lines come from the topics, as any outside reader would see them, not from inside
the fold: a tail of ``runs`` (a worker's failed outcomes), ``tasks`` (which attempt a
task was), ``waits`` (every ``stepstream/function.failed`` and ``.cancelled`` event
reaches it, whether or not a trigger listens on ``events``) and ``functions`` (each
function's retries). :class:`RunReporter` is the pure part: records in, lines out.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from engine.api.views import cancelled_text
from topics import codec
from topics.catalog import Catalog
from topics.records import (
    FUNCTION_CANCELLED_EVENT,
    FUNCTION_FAILED,
    FUNCTION_FAILED_EVENT,
    STEP_FAILED,
    Event,
    FunctionRegistered,
    OutcomesReported,
    RunRequested,
    Task,
)
from topics.settings import Settings

log = logging.getLogger(__name__)

# Runs and tasks remembered to name a failure's function and attempt. A dev session's
# live runs fit many times over; an older run's line just lacks its attempt count.
REMEMBERED = 20_000
MESSAGE_CHARS = 200


@dataclass(frozen=True, slots=True)
class Line:
    """One terminal line: what happened to which run."""

    kind: str  # "failed" | "retrying" | "step failed" | "cancelled"
    fn_id: str
    run_id: str
    detail: str
    ts_ms: int

    def text(self) -> str:
        at = datetime.datetime.fromtimestamp(self.ts_ms / 1000).strftime("%H:%M:%S")
        return f"{at}  {self.kind:<11} {self.fn_id}  {self.run_id}  {self.detail}"


def _one_line(text: Any) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MESSAGE_CHARS else flat[:MESSAGE_CHARS - 1] + "…"


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return _one_line(error)
    name, message = error.get("name"), error.get("message")
    return _one_line(f"{name}: {message}" if name and message else name or message or "")


class _Bounded(OrderedDict[Any, Any]):
    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > REMEMBERED:
            self.popitem(last=False)


class RunReporter:
    """Turns records into :class:`Line` s. Pure and single-threaded: feed it records in
    any order across topics; a failure whose task or function it has not seen still
    gets a line, without the attempt count."""

    def __init__(self) -> None:
        self.fn_retries: dict[str, int] = {}
        self.run_retries = _Bounded()
        self.run_fn = _Bounded()
        self.tasks = _Bounded()  # (run id, task seq) -> (attempt, step_attempts)
        self.seen_events = _Bounded()  # a re-delivered lifecycle event: one line

    def feed(self, record: Any) -> list[Line]:
        if isinstance(record, FunctionRegistered):
            self.fn_retries[record.fn_id] = record.retries
        elif isinstance(record, RunRequested):
            self.run_retries.put(record.run_id, record.retries)
            self.run_fn.put(record.run_id, record.fn_id)
        elif isinstance(record, Task):
            self.run_fn.put(record.run_id, record.fn_id)
            self.tasks.put((record.run_id, record.seq), (record.attempt, record.step_attempts))
        elif isinstance(record, OutcomesReported):
            return self._failures(record)
        elif isinstance(record, Event):
            return self._ending(record)
        return []

    def _failures(self, rec: OutcomesReported) -> list[Line]:
        lines = []
        fn_id = self.run_fn.get(rec.run_id, "?")
        task = self.tasks.get((rec.run_id, rec.task_seq))
        retries = self.run_retries.get(rec.run_id, self.fn_retries.get(fn_id))
        for o in rec.outcomes:
            if o.op not in (STEP_FAILED, FUNCTION_FAILED):
                continue
            attempt: int | None = None
            if task is not None:
                attempt = (task[1].get(o.step_id or "", 0) if o.op == STEP_FAILED
                           else task[0])
            what = f"step '{o.step_id}'" if o.op == STEP_FAILED else "function"
            count = ""
            if attempt is not None:
                count = (f" (attempt {attempt + 1} of {retries + 1})" if retries is not None
                         else f" (attempt {attempt + 1})")
            error = _error_text(o.error)
            will_retry = (o.retriable and retries is not None and attempt is not None
                          and attempt < retries)
            if will_retry:
                lines.append(Line("retrying", fn_id, rec.run_id,
                                  f"{what} failed{count}: {error}", rec.ts))
            elif o.op == STEP_FAILED:
                # The step's error is raised in the function, which may catch it: the
                # run's own line follows only if it then fails.
                why = f"{count}, no retries left" if o.retriable else ", not retriable"
                lines.append(Line("step failed", fn_id, rec.run_id,
                                  f"{what} failed{why}: {error}", rec.ts))
            # A function that failed for good: its run.failed event gives the line.
        return lines

    def _ending(self, event: Event) -> list[Line]:
        if event.name not in (FUNCTION_FAILED_EVENT, FUNCTION_CANCELLED_EVENT):
            return []
        if event.id in self.seen_events:
            return []
        self.seen_events.put(event.id, True)
        data = event.data if isinstance(event.data, dict) else {}
        fn_id, run_id = str(data.get("function_id", "?")), str(data.get("run_id", "?"))
        error = data.get("error")
        if event.name == FUNCTION_FAILED_EVENT:
            return [Line("failed", fn_id, run_id, _error_text(error), event.ts)]
        return [Line("cancelled", fn_id, run_id,
                     # "through the API: refund", "by event x": the line says cancelled
                     _one_line(cancelled_text(data.get("cancelled_by"))
                               .removeprefix("cancelled").strip()), event.ts)]


class DevTerminal:
    """Tails the topics in a thread and prints a :class:`Line` for each failure, retry
    and cancellation, from the moment it starts (older records are not shown)."""

    def __init__(self, settings: Settings, write: Callable[[str], None]) -> None:
        self.settings = settings
        self.write = write
        self.reporter = RunReporter()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dev-terminal", daemon=True)

    def start(self) -> DevTerminal:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)

    def _run(self) -> None:
        try:
            self._tail()
        except Exception:
            # The terminal lines are a convenience: never take `stepstream dev` down.
            log.exception("the dev terminal stopped printing run failures")

    def _tail(self) -> None:
        catalog = Catalog(self.settings)
        consumer = Consumer(self.settings.client_config({
            **self.settings.consumer_tuning(),
            # Assigned, never subscribed, never committed: it reads beside the engine
            # and the workers without joining their groups.
            "group.id": self.settings.prefix + "dev-terminal",
        }))
        try:
            parts = range(catalog.partitions)
            consumer.assign(
                [TopicPartition(catalog.functions, p, OFFSET_BEGINNING) for p in parts]
                + [TopicPartition(t, p, OFFSET_END)
                   for t in (catalog.runs, catalog.tasks, catalog.waits) for p in parts])
            while not self.stopping.is_set():
                for m in consumer.consume(500, 0.2):
                    if m.error() is not None or m.value() is None:
                        continue
                    try:
                        record = codec.decode(m.value())
                    except (codec.DecodeError, ValueError):
                        continue  # the engine dead-letters it; nothing to say here
                    for line in self.reporter.feed(record):
                        self.write(line.text())
        finally:
            consumer.close()
