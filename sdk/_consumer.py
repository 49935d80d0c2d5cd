"""The worker's consumer of the ``tasks`` topic: polling, commits and partition handover.

Every call on the Kafka consumer after ``subscribe`` (polls, commits, the rebalance
callbacks, which librdkafka runs inside a poll, and the close) happens on the worker's
one consumer thread, in order. Offsets are committed only below tasks whose report was
acknowledged (:class:`sdk._offsets.OffsetTracker`), so a worker that dies mid-task
leaves it to another; the next owner skips the finished ones above the commit
(:mod:`sdk._handover`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import confluent_kafka

from sdk._connect import client_logging
from sdk._handover import finished_ahead
from sdk._offsets import OffsetTracker
from topics.catalog import Catalog
from topics.settings import Settings

log = logging.getLogger("stepstream.worker")

# Keep the consumer thread's poll short so that pause/resume, commits and stop
# requests take effect quickly; a poll returns at once when a record arrives.
POLL_TIMEOUT_S = 0.05


class TaskConsumer:
    """One app's consumer group on ``tasks``.

    ``on_gone`` is called (on the consumer thread) with the partitions revoked or lost,
    so the worker can drop what it queued from them.
    """

    def __init__(self, settings: Settings, catalog: Catalog, app_id: str,
                 tracker: OffsetTracker, worker_id: str,
                 on_gone: Callable[[set[int]], None]) -> None:
        self._settings = settings
        self._topic = catalog.tasks
        self._runs_topic = catalog.runs
        self._tracker = tracker
        self._worker_id = worker_id
        self._on_gone = on_gone
        # (run id, task seq) -> steps a previous owner checkpointed: set while taking
        # partitions over (consumer thread), taken as the tasks arrive (loop thread).
        self._progress: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
        # Any: the stubs overload commit() on a literal ``asynchronous``, ours is a flag.
        self._consumer: Any = confluent_kafka.Consumer(settings.client_config({
            "group.id": f"{settings.prefix}workers.{app_id}",
            "client.id": f"stepstream-worker-{app_id}",
            **settings.consumer_tuning(),
            **client_logging(),
            "on_commit": _log_commit,
        }))

    def subscribe(self) -> None:
        """Join the group; partitions arrive with the following polls."""
        self._consumer.subscribe([self._topic], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)

    def poll(self, room: int) -> list[Any]:
        """One round on the consumer thread: commits, then up to ``room`` records.

        The worker never pauses its partitions: on Tansu a resumed partition is fetched
        again only ~750 ms later (measured), which starved a busy worker. Instead, when
        every slot and the backlog are full the loop waits for a slot before polling, and
        then takes one record per round, so rebalance callbacks are still served and the
        backlog grows by at most one task per second while the worker is saturated.
        """
        consumer = self._consumer
        self.commit()
        msg = consumer.poll(POLL_TIMEOUT_S if room > 0 else 0)
        if msg is None:
            return []
        batch = [msg]
        if room > 1:
            # consume(n, timeout) waits for all n records: drain only what is here.
            batch.extend(consumer.consume(room - 1, 0))
        return batch

    def take_progress(self, run_id: str, seq: int) -> dict[str, dict[str, Any]] | None:
        """The steps a previous owner of the task checkpointed, once (see
        :mod:`sdk._handover`)."""
        if not self._progress:
            return None
        return self._progress.pop((run_id, seq), None)

    def commit(self, *, asynchronous: bool = True, partitions: list[int] | None = None) -> None:
        """Commit the positions that moved (of ``partitions``, default all)."""
        # Every round, not on a timer: a worker killed right after a report must not
        # leave the finished task uncommitted, or its successor runs it again.
        changed = self._tracker.take_changed(partitions)
        if changed:
            offsets = [confluent_kafka.TopicPartition(self._topic, p, pos)
                       for p, pos in changed.items()]
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)

    def close(self) -> None:
        """Commit what is finished, then leave the group."""
        try:
            self.commit(asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            log.warning("worker %s: final commit failed: %s", self._worker_id, exc)
        self._consumer.close()

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        assigned = [tp.partition for tp in partitions]
        self._tracker.forget(assigned)
        # Before any of it runs: tasks a previous owner finished but could not commit.
        handover = finished_ahead(self._settings, consumer, self._topic, assigned,
                                  self._runs_topic)
        for p, done in handover.done.items():
            self._tracker.set_known_done(p, done)
        self._progress = handover.progress  # a new assignment: what was pending went
        log.info("worker %s: assigned %s", self._worker_id,
                 sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = [tp.partition for tp in partitions]
        try:
            # Hand over what is finished, so the next owner does not redo it.
            self.commit(asynchronous=False, partitions=revoked)
        except confluent_kafka.KafkaException as exc:
            log.warning("worker %s: commit on revoke failed: %s", self._worker_id, exc)
        self._tracker.forget(revoked)
        self._on_gone(set(revoked))
        log.info("worker %s: revoked %s", self._worker_id, sorted(revoked))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        lost = [tp.partition for tp in partitions]
        self._tracker.forget(lost)
        self._on_gone(set(lost))
        log.warning("worker %s: lost %s", self._worker_id, sorted(lost))


def _log_commit(err: Any, partitions: list[Any]) -> None:
    if err is not None:
        log.warning("offset commit failed: %s", err)
