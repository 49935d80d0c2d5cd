"""The worker's jobs: which received tasks wait for a slot, which may start, and which
are stale or superseded. No I/O and no asyncio: the worker's loop thread calls it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sdk._offsets import OffsetTracker, SeqMemory
from topics import records


@dataclass(slots=True)
class Job:
    """One task this worker holds, queued or running."""

    task: records.Task
    # Every (partition, offset) holding this task: a rebalance can re-deliver a task
    # that is still running here, and the copy is finished along with the original.
    offsets: list[tuple[int, int]] = field(default_factory=list)
    running: bool = False
    # Its partitions went to another worker while it ran (the next owner is about to run
    # the same task), or its run ended: it must not run ahead.
    revoked: bool = False


class Jobs:
    """The backlog of tasks waiting for a slot and the jobs held, by (run id, seq).

    A task is finished (its offsets marked done in ``tracker``) when it is stale, when a
    newer task of its run supersedes it in the backlog, or when its report was delivered.
    """

    def __init__(self, tracker: OffsetTracker, seq_memory: int) -> None:
        self._tracker = tracker
        self._seqs = SeqMemory(seq_memory)
        self._held: dict[tuple[str, int], Job] = {}
        self.backlog: deque[Job] = deque()
        self._queued: dict[str, Job] = {}  # run id -> its task waiting in the backlog
        self._running: dict[str, Job] = {}  # run id -> its newest task running here

    def add(self, task: records.Task, partition: int, offset: int) -> None:
        """Queue a task received at ``partition``/``offset``, unless it is a copy of a
        job held here, stale, or older than the task of its run already queued."""
        key = (task.run_id, task.seq)
        job = self._held.get(key)
        if job is not None:
            job.offsets.append((partition, offset))
            return
        if self._seqs.is_stale(task.run_id, task.seq):
            self._tracker.done(partition, offset)
            return
        running = self._running.get(task.run_id)
        if running is not None and running.task.seq < task.seq:
            # The engine wrote this task after applying a report of the running one's seq
            # (another worker's, after a takeover ran the same task twice): the running
            # pass is obsolete and must not run ahead into steps this task will run.
            running.revoked = True
        queued = self._queued.get(task.run_id)
        if queued is not None:
            if queued.task.seq > task.seq:
                self._tracker.done(partition, offset)
                return
            # The engine wrote the newer task after applying the older one's report
            # (a new worker re-reading uncommitted tasks meets both): the older one is
            # superseded, and running it would re-run a step that already completed.
            self.backlog.remove(queued)
            self.finish(queued)
        job = Job(task, [(partition, offset)])
        self._held[key] = job
        self._queued[task.run_id] = job
        self.backlog.append(job)

    def next_to_start(self) -> Job | None:
        """Take the next queued job that is not stale and mark it running; None if the
        backlog is empty. Stale ones met on the way are finished."""
        while self.backlog:
            job = self.backlog.popleft()
            task = job.task
            self._queued.pop(task.run_id, None)
            if self._seqs.is_stale(task.run_id, task.seq):
                self.finish(job)
                continue
            self._seqs.started(task.run_id, task.seq)
            job.running = True
            self._running[task.run_id] = job
            return job
        return None

    def finish(self, job: Job) -> None:
        """The job is done: every offset holding it may be committed."""
        for p, o in job.offsets:
            self._tracker.done(p, o)
        self._forget(job)

    def _forget(self, job: Job) -> None:
        self._held.pop((job.task.run_id, job.task.seq), None)
        if self._running.get(job.task.run_id) is job:
            del self._running[job.task.run_id]

    def abandon(self, job: Job) -> None:
        """The job stopped before its report went out: its offsets stay uncommitted, so
        this or another worker runs it again."""
        self._forget(job)

    def cancel(self, run_id: str, seq: int) -> None:
        """The run ended while task ``seq`` was dispatched: a running job of it stops
        running ahead, a queued one is finished unrun, and copies met later are stale."""
        for (held_run, held_seq), job in self._held.items():
            if held_run == run_id and held_seq <= seq and job.running:
                job.revoked = True
        queued = self._queued.get(run_id)
        if queued is not None and queued.task.seq <= seq:
            self.backlog.remove(queued)
            del self._queued[run_id]
            self.finish(queued)
        self._seqs.started(run_id, seq)

    def drop_queued(self, partitions: set[int]) -> None:
        """Forget queued tasks whose partitions went elsewhere; running ones are marked
        revoked (they finish their current step and report, but go no further)."""
        for job in self._held.values():
            if job.running and all(p in partitions for p, _ in job.offsets):
                job.revoked = True
        keep: deque[Job] = deque()
        for job in self.backlog:
            job.offsets = [(p, o) for p, o in job.offsets if p not in partitions]
            if job.offsets:
                keep.append(job)
            else:
                self._held.pop((job.task.run_id, job.task.seq), None)
                self._queued.pop(job.task.run_id, None)
        self.backlog = keep
