"""The dashboard in a real headless browser: Debian's chromium driven by selenium.

One engine, one worker and two API servers on it (dev mode, and keyed) per module.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.api.http import make_app, start_server
from engine.api.ingest import EventIngest
from tests.integration.harness import Stack

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
KEY = "browser-test-key"


class Server:
    """``make_app`` on the stack's engine, served from its own thread and loop."""

    def __init__(self, stack: Stack, *, dev: bool) -> None:
        assert stack.engine is not None
        self.ingest = EventIngest(stack.settings)
        self.ingest.start()
        self.app = make_app(stack.engine.queries, self.ingest, dev=dev,
                            event_keys=frozenset({"ev"}), api_keys=frozenset({KEY}))
        self.loop = asyncio.new_event_loop()
        self.runner: Any = None
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.runner = self.loop.run_until_complete(start_server(self.app, "127.0.0.1", 0))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10)
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.ingest.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium; fails (never skips) when it is not installed."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed for the dashboard's browser "
                    f"tests: run scripts/install-browser.sh (make test runs it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="stepstream-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # This machine's closed network refuses chromium's background connections: without
    # these flags it stalls on them.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
