"""The engine process: the processor loop on its own thread, and queries over its state."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from pathlib import Path

from engine.api.queries import Queries
from engine.runtime.lag import STALL_S
from engine.runtime.processor import Processor
from topics.settings import Settings

log = logging.getLogger("stepstream.engine")


class Engine:
    """Router, run processor and timers for the partitions this process is assigned.

    ``start()`` returns at once; ``wait_ready()`` blocks until the first partition
    assignment is restored; ``stop()`` finishes the current batch and closes cleanly.
    """

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.settings = settings
        self.processor = Processor(settings, state_dir)
        self.queries = Queries(self.processor)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._stall_logged = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stepstream-processor",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.processor.run()
        except BaseException as exc:
            self.error = exc
            log.exception("processor stopped")
            # Wake whoever waits for readiness: a waiter left blocked (serve's wait on an
            # executor thread) kept a failed engine process alive for two minutes.
            self.processor.ready.set()
            raise

    def wait_ready(self, timeout: float = 60) -> bool:
        """True once the first partition assignment is restored; False after
        ``timeout`` or as soon as the processor has failed (see ``error``)."""
        return self.processor.ready.wait(timeout) and self.error is None

    def check_progress(self, after_s: float = STALL_S) -> str | None:
        """Log, once, where the processor thread stands when its loop has not come round
        for ``after_s`` (its lag sample is taken every round), and log again when it
        moves. Called by the serve loop: a processor stuck in one call otherwise shows
        only as runs that never start. Returns what it logged."""
        report = self.processor.lag.report()
        if report is None or self._thread is None or self._thread.ident is None:
            return None
        idle_s = report["sampled_ms_ago"] / 1000
        said = None
        if idle_s >= after_s and not self._stall_logged:
            frame = sys._current_frames().get(self._thread.ident)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "?"
            said = f"the processor has not come round for {idle_s:.0f} s; it is at:\n{stack}"
            log.warning("%s", said)
            self._stall_logged = True
        elif idle_s < after_s and self._stall_logged:
            said = "the processor is moving again"
            log.warning("%s", said)
            self._stall_logged = False
        return said

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30) -> None:
        self.processor.stop()
        if self._thread is not None:
            self._thread.join(timeout)
