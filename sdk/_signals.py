"""SIGINT and SIGTERM for a worker run from ``Worker.run()``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any


async def run_with_signals(main: Callable[[], Coroutine[Any, Any, None]],
                           on_signal: Callable[[], None]) -> None:
    """Await ``main()`` with ``on_signal`` handling SIGINT and SIGTERM, where the loop
    can install handlers (the main thread); elsewhere ``main`` runs without them."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):
            pass  # not the main thread (or no signals here): stop() still works
    try:
        await main()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
