"""``GET /v1/events``, ``/v1/events/{id}`` and ``/v1/dead-letters`` read from their topics
on the real broker: newest first, filtered by name and time, paged by cursor without
repeats, bad parameters refused; the dead letter of a junk record with its place and
reason."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Server
from tests.browser.test_dashboard import make_client
from tests.integration.harness import Stack, app_stack, wait_for

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def api(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Server]]:
    with app_stack(broker, tmp_path_factory.mktemp("hist"), make_client,
                   ["dash-hello"]) as stack:
        server = Server(stack, dev=True)
        try:
            yield stack, server
        finally:
            server.close()


def get(server: Server, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_events_newest_first_by_name_and_time_paged(api: tuple[Stack, Server]) -> None:
    stack, server = api
    before = int(time.time() * 1000)
    ids = [stack.send("dash/hello", {"n": i}) for i in range(7)]
    other = stack.send("dash/other", {"n": 99})
    wait_for(lambda: len(get(server, "/v1/events?name=dash/hello&limit=100")[1]["data"]) >= 7,
             30, "the events listed")
    status, body = get(server, "/v1/events?limit=100")
    assert status == 200 and set(body["metadata"]) >= {"fetched_at", "cached_until"}
    listed = [e["id"] for e in body["data"]]
    assert listed[0] == other and listed[1:8] == ids[::-1]
    assert body["data"][1]["data"] == {"n": 6} and body["data"][1]["name"] == "dash/hello"
    # Paged by cursor: 3 + 3 + 1, none repeated or skipped.
    seen: list[str] = []
    path = "/v1/events?name=dash/hello&limit=3"
    while True:
        status, page = get(server, path)
        assert status == 200 and len(page["data"]) <= 3
        seen += [e["id"] for e in page["data"]]
        if "cursor" not in page:
            break
        path = f"/v1/events?name=dash/hello&limit=3&cursor={page['cursor']}"
    assert seen == ids[::-1]
    # Time bounds are the time the broker received them.
    status, body = get(server, f"/v1/events?received_before={before}&name=dash/hello")
    assert status == 200 and not set(ids) & {e["id"] for e in body["data"]}
    status, body = get(server, f"/v1/events?received_after={before}")
    assert {e["id"] for e in body["data"]} == {*ids, other}
    # One event, by id.
    status, body = get(server, f"/v1/events/{ids[3]}")
    assert status == 200 and body["data"]["data"] == {"n": 3}
    status, body = get(server, f"/v1/events/{other}")
    assert status == 200 and body["data"]["name"] == "dash/other"
    assert get(server, "/v1/events/no-such-event")[0] == 404


@pytest.mark.parametrize("query", ["limit=0", "limit=x", "limit=101", "cursor=%%%",
                                   "cursor=eyJ4Ijo1fQ", "received_after=yesterday",
                                   "received_after=2030-01-01&received_before=2020-01-01",
                                   "nme=typo"])
def test_events_bad_parameters_are_400(api: tuple[Stack, Server], query: str) -> None:
    status, body = get(api[1], f"/v1/events?{query}")
    assert status == 400 and body["error"], body


def test_dead_letters_show_topic_offset_and_reason(api: tuple[Stack, Server]) -> None:
    stack, server = api
    stack.produce_raw(stack.catalog.events, b"\xc1 not a record", key=b"junk-key", partition=1)
    found = wait_for(lambda: [d for d in get(server, "/v1/dead-letters")[1]["data"]
                              if d["key"] == "junk-key"], 30, "the dead letter")
    letter = found[0]
    assert letter["topic"] == stack.catalog.events and letter["partition"] == 1
    assert isinstance(letter["offset"], int) and "undecodable" in letter["reason"]
    assert get(server, "/v1/dead-letters?limit=0")[0] == 400
    # The dashboard's page lists it too.
    with urllib.request.urlopen(server.url + "/dead-letters", timeout=30) as resp:
        page = resp.read().decode()
    assert "junk-key" in page and stack.catalog.events in page and "undecodable" in page


def test_a_json_event_from_another_producer_is_listed_like_any_event(
        api: tuple[Stack, Server]) -> None:
    stack, server = api
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": stack.settings.brokers})
    producer.produce(stack.catalog.events,
                     json.dumps({"name": "dash/json", "data": {"via": "kcat"},
                                 "id": "json-evt-1"}).encode())
    assert producer.flush(10) == 0
    found = wait_for(lambda: get(server, "/v1/events?name=dash/json")[1]["data"], 30,
                     "the JSON event listed")
    assert [(e["id"], e["data"]) for e in found] == [("json-evt-1", {"via": "kcat"})]
    status, one = get(server, "/v1/events/json-evt-1")
    assert status == 200 and one["data"]["name"] == "dash/json"
