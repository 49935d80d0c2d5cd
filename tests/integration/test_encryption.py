"""sdk.EncryptionMiddleware end to end: what the `events` and `runs` topics hold is
ciphertext, read back with a plain consumer; the functions see plain values; the run's
output in the engine is ciphertext that the client's key decrypts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

import sdk
from tests.integration.harness import Stack, app_stack, wait_for
from topics import records
from topics.codec import decode
from topics.settings import Settings

pytestmark = pytest.mark.kafka

KEY = "test-encryption-key"
CARD = "4242424242424242"
EMAIL = "secret-mail@example.com"
SEEN: list[Any] = []


def make_client(settings: Settings) -> sdk.Client:
    client = sdk.Client(app_id="enc", settings=settings,
                        middleware=[sdk.EncryptionMiddleware.factory(KEY)])

    @client.create_function(fn_id="pay", trigger=sdk.TriggerEvent(event="enc/pay"))
    async def pay(ctx: sdk.Context) -> Any:
        card = await ctx.step.run("card", lambda: {"number": ctx.event.data["encrypted"]})
        SEEN.append(("card", card))
        await ctx.step.send_event("receipt", sdk.Event(
            name="enc/receipt", data={"order": ctx.event.data["order"],
                                      "encrypted": {"email": EMAIL}}))
        return {"charged": card["number"]}

    @client.create_function(fn_id="mail", trigger=sdk.TriggerEvent(event="enc/receipt"))
    async def mail(ctx: sdk.Context) -> Any:
        SEEN.append(("mail", ctx.event.data))
        return "sent"

    return client


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("encryption")
    with app_stack(broker, tmp, make_client, ["enc-pay", "enc-mail"]) as s:
        yield s


def read_topic(stack: Stack, topic: str, done: Any) -> list[tuple[bytes, Any]]:
    """Every record of ``topic`` (raw value, decoded) until ``done(records)`` holds."""
    c = Consumer({"bootstrap.servers": stack.settings.brokers, "group.id": uuid.uuid4().hex,
                  **stack.settings.consumer_tuning()})
    c.assign([TopicPartition(topic, p, 0) for p in range(stack.settings.partitions)])
    found: list[tuple[bytes, Any]] = []
    try:
        def enough() -> bool:
            for m in c.consume(200, 0.1):
                if not m.error():
                    found.append((m.value(), decode(m.value())))
            return bool(done(found))
        wait_for(enough, 30, f"records on {topic}")
    finally:
        c.close()
    return found


def test_stored_values_are_ciphertext_and_functions_see_plain_ones(stack: Stack) -> None:
    order = uuid.uuid4().hex
    event_id = stack.send("enc/pay", {"order": order, "encrypted": CARD})
    pay = stack.finished_run(event_id)
    assert pay["status"] == "completed"

    # The engine (and so the API and dashboard) holds ciphertext; the key opens it.
    assert pay["output"]["__ENCRYPTED__"] is True
    assert sdk.Encryptor(KEY).decrypt(pay["output"]) == {"charged": CARD}

    # On the topics, read with a plain consumer: no plaintext anywhere.
    events = read_topic(stack, stack.catalog.events, lambda found: sum(
        isinstance(r, records.Event) and r.data.get("order") == order
        for _, r in found) >= 2)
    ours = [(raw, r) for raw, r in events
            if isinstance(r, records.Event) and r.data.get("order") == order]
    assert sorted(r.name for _, r in ours) == ["enc/pay", "enc/receipt"]
    for raw, r in ours:
        assert CARD.encode() not in raw and EMAIL.encode() not in raw
        assert r.data["encrypted"]["__STRATEGY__"] == "inngest/libsodium"

    # The functions saw plain values.
    wait_for(lambda: any(kind == "mail" and data.get("order") == order
                         for kind, data in SEEN), 30, "the receipt's run")
    assert ("card", {"number": CARD}) in SEEN
    assert ("mail", {"order": order, "encrypted": {"email": EMAIL}}) in SEEN

    def pay_reports(found: list[tuple[bytes, Any]]) -> list[tuple[bytes, Any]]:
        return [(raw, r) for raw, r in found if isinstance(r, records.OutcomesReported)
                and r.run_id == pay["run_id"]]

    runs = read_topic(stack, stack.catalog.runs, lambda found: any(
        o.op == records.FUNCTION_COMPLETED for _, r in pay_reports(found)
        for o in r.outcomes))
    outcomes = [o for _, r in pay_reports(runs) for o in r.outcomes]
    assert {o.step_id for o in outcomes} >= {"card", "receipt", None}
    for raw, _ in pay_reports(runs):
        assert CARD.encode() not in raw and EMAIL.encode() not in raw
    for o in outcomes:
        if o.op in (records.STEP_COMPLETED, records.FUNCTION_COMPLETED):
            assert o.output["__ENCRYPTED__"] is True, o
