"""Child processes that die with the engine (the dev broker, the HTTP ingest workers)."""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
from collections.abc import Callable


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that sends the child ``sig`` when its parent dies (Linux only;
    None elsewhere).

    Our children run in their own sessions (see :meth:`engine.cli.devbroker.DevBroker.start`), so without
    this a parent killed without cleanup (SIGKILL, a test runner's timeout) would leave
    them running, a broker holding its port. Linux delivers the signal when the *thread* that forked
    exits, so it is only armed when the broker is started from the main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)

    return arm
