"""The dashboard in a real headless browser: Debian's chromium driven by selenium.

One engine, one worker and two API servers on it (dev mode, and keyed) per module.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ServedApi, Stack

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
KEY = "browser-test-key"


class Server(ServedApi):
    """The API on the stack's engine, keyed with ``KEY`` (and the event key ``ev``)."""

    def __init__(self, stack: Stack, *, dev: bool) -> None:
        super().__init__(stack, dev=dev, event_keys=frozenset({"ev"}),
                         api_keys=frozenset({KEY}))


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
