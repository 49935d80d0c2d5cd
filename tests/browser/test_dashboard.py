"""The dashboard clicked through in headless chromium, on a real engine and broker:
send an event, see its run appear, open it, see its steps; cancel a waiting run;
re-run a failed one; invoke a function; user data stays text; login outside dev mode."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

import sdk
from tests.browser.conftest import KEY, Server
from tests.integration.harness import Stack, app_stack, wait_for
from topics.settings import Settings

pytestmark = pytest.mark.kafka

SCRIPT_IN_DATA = "<script>window.__xss = 1</script>"
SCRIPT_IN_OUTPUT = "</script><img src=x onerror='window.__xss = 2'>"


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="dash", settings=settings)

    @client.create_function(fn_id="hello", trigger=sdk.TriggerEvent(event="dash/hello"))
    async def hello(ctx: sdk.Context) -> Any:
        greeting = await ctx.step.run("greet", lambda: f"hello {ctx.event.data.get('who')}")
        shown = await ctx.step.run("render", lambda: {"html": SCRIPT_IN_OUTPUT})
        return {"greeting": greeting, "shown": shown}

    @client.create_function(fn_id="waiter", trigger=sdk.TriggerEvent(event="dash/wait"))
    async def waiter(ctx: sdk.Context) -> Any:
        got = await ctx.step.wait_for_event("go", event="dash/go", timeout="1h")
        return None if got is None else got.data

    @client.create_function(fn_id="fails", trigger=sdk.TriggerEvent(event="dash/fail"),
                            retries=0)
    async def fails(ctx: sdk.Context) -> Any:
        await ctx.step.run("boom", lambda: 1 / 0)

    return client


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fns = ["dash-hello", "dash-waiter", "dash-fails"]
    with app_stack(broker, tmp_path_factory.mktemp("dash"), make_client, fns) as s:
        yield s


@pytest.fixture(scope="module")
def dev(stack: Stack) -> Iterator[Server]:
    server = Server(stack, dev=True)
    yield server
    server.close()


@pytest.fixture(scope="module")
def keyed(stack: Stack) -> Iterator[Server]:
    server = Server(stack, dev=False)
    yield server
    server.close()


def text_of(driver: Any, css: str) -> str:
    """The text of the first match, "" if none (or the page is being replaced)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def no_script_ran(driver: Any) -> None:
    assert driver.execute_script("return window.__xss === undefined"), "user data ran as code"
    assert driver.find_elements(By.CSS_SELECTOR, "img") == []


def test_send_an_event_see_its_run_open_it_and_its_steps(browser: Any, dev: Server,
                                                         stack: Stack) -> None:
    browser.get(dev.url + "/events")
    browser.find_element(By.ID, "event-name").send_keys("dash/hello")
    data = browser.find_element(By.ID, "event-data")
    data.clear()
    data.send_keys(json.dumps({"who": SCRIPT_IN_DATA}))
    browser.find_element(By.ID, "send").click()
    sent = wait_for(lambda: text_of(browser, "#send-result").startswith("Sent ")
                    and text_of(browser, "#send-result"), 30, "the event sent")
    event_id = sent.split()[1]
    # The events page lists it (from the events topic), its data as text.
    wait_for(lambda: browser.current_url.endswith("/events") and browser.find_elements(
        By.CSS_SELECTOR, f"tr[data-event='{event_id}']"), 30, "the event listed")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-event='{event_id}']")
    assert SCRIPT_IN_DATA in row.text
    no_script_ran(browser)

    # The runs page shows the run by live refresh, without a reload.
    browser.get(dev.url + "/")
    run_id = wait_for(lambda: stack.runs_for(event_id) and stack.runs_for(event_id)[0]["run_id"],
                      30, "the run")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"tr[data-run='{run_id}']"), 30,
             "the run listed by live refresh")
    stack.finished_run(event_id)
    browser.find_element(By.CSS_SELECTOR, f"tr[data-run='{run_id}'] a").click()
    wait_for(lambda: text_of(browser, "#run-id") == run_id, 15, "the run page")
    assert text_of(browser, "#run-status") == "Completed"
    steps = text_of(browser, "#steps")
    assert "greet" in steps and "render" in steps
    bars = browser.find_elements(By.CSS_SELECTOR, "#waterfall .wf-bar")
    assert len(bars) == 2 and all(b.value_of_css_property("width") != "0px" for b in bars)
    browser.find_element(By.LINK_TEXT, "render").click()
    wait_for(lambda: SCRIPT_IN_OUTPUT in text_of(browser, "#step-output"), 15, "step output")
    assert SCRIPT_IN_DATA in text_of(browser, "#trigger")
    no_script_ran(browser)


def test_cancel_a_waiting_run(browser: Any, dev: Server, stack: Stack) -> None:
    event_id = stack.send("dash/wait", {})
    run_id = wait_for(lambda: stack.runs_for(event_id) and stack.runs_for(event_id)[0]["run_id"],
                      30, "the waiting run")
    wait_for(lambda: ((stack.run(run_id) or {}).get("waiting") or {}).get("kind") == "event", 30,
             "the run waiting for its event")
    browser.get(f"{dev.url}/runs/{run_id}")
    assert "waiting for event dash/go" in text_of(browser, "#waiting")
    browser.find_element(By.ID, "cancel").click()
    wait_for(lambda: text_of(browser, "#run-status") == "Cancelled", 30, "the run cancelled")
    assert "cancelled through the API" in text_of(browser, "#cancelled-by")


def test_rerun_a_failed_run(browser: Any, dev: Server, stack: Stack) -> None:
    """Needs POST /v1/runs/{id}/rerun (branch i12-rerun)."""
    event_id = stack.send("dash/fail", {})
    failed = stack.finished_run(event_id)
    assert failed["status"] == "failed"
    browser.get(f"{dev.url}/runs/{failed['run_id']}")
    assert "ZeroDivisionError" in text_of(browser, "#run-error")
    browser.find_element(By.ID, "rerun").click()

    def answered() -> bool:
        moved = "/runs/" in browser.current_url and not browser.current_url.endswith(
            failed["run_id"])
        return moved or bool(text_of(browser, "#action-error"))

    wait_for(answered, 30, "the re-run's answer")
    assert not text_of(browser, "#action-error"), text_of(browser, "#action-error")
    wait_for(lambda: text_of(browser, "#run-id") not in ("", failed["run_id"]), 30,
             "the re-run's page")


def test_invoke_a_function_from_its_page(browser: Any, dev: Server) -> None:
    browser.get(dev.url + "/functions")
    form = browser.find_element(By.CSS_SELECTOR, "form.invoke[data-fn='dash-hello']")
    area = form.find_element(By.NAME, "data")
    area.clear()
    area.send_keys('{"who": "invoker"}')
    form.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: "/runs/" in browser.current_url and text_of(browser, "#run-id"), 30,
             "the invoked run's page")
    assert "stepstream/function.invoked" in text_of(browser, ".head")
    # A bad payload is refused with the API's message, on the page.
    browser.get(dev.url + "/functions")
    form = browser.find_element(By.CSS_SELECTOR, "form.invoke[data-fn='dash-hello']")
    area = form.find_element(By.NAME, "data")
    area.clear()
    area.send_keys("[1, 2]")
    form.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: "must be a JSON object" in text_of(form, ".invoke-error"), 15,
             "the invoke error")


def _request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
             body: bytes | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_outside_dev_mode_a_page_needs_a_login(browser: Any, keyed: Server) -> None:
    status, body = _request(keyed.url + "/", headers={"Accept": "text/html"})
    assert status == 401 and 'name="key"' in body
    status, body = _request(keyed.url + "/v1/events")
    assert status == 401 and "STEPSTREAM_API_KEYS" in json.loads(body)["error"]
    browser.delete_all_cookies()
    browser.get(keyed.url + "/functions")
    browser.find_element(By.ID, "key").send_keys("wrong")
    browser.find_element(By.ID, "login").click()
    wait_for(lambda: "not accepted" in text_of(browser, "#login-error"), 15, "refusal")
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.ID, "login").click()
    wait_for(lambda: browser.current_url.endswith("/functions")
             and browser.find_elements(By.CSS_SELECTOR, "form.invoke"), 15, "the page")
    cookie = browser.get_cookie("stepstream_key")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # The cookie reads; a change with it from another origin is refused.
    jar = {"Cookie": f"stepstream_key={KEY}"}
    assert _request(keyed.url + "/v1/functions", headers=jar)[0] == 200
    status, body = _request(keyed.url + "/v1/functions/dash-hello/invoke", method="POST",
                            headers={**jar, "Origin": "http://evil.example"}, body=b"{}")
    assert status == 403 and "own page" in body
    status, body = _request(keyed.url + "/v1/functions/dash-hello/invoke", method="POST",
                            headers=jar, body=b"{}")
    assert status == 403
    browser.delete_all_cookies()


def test_install_script_is_idempotent_here() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "install-browser.sh"
    assert os.access(script, os.X_OK)
    assert os.system(f"sh {script}") == 0
