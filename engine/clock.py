"""The engine's one wall clock. Only the edges read it (the processor loop, timers,
cron, ingest, queries); the folds take their time from the records."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)
