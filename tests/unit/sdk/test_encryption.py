"""sdk.EncryptionMiddleware on a pure execution: what is stored is ciphertext in
Inngest's shape, the function sees plain values, keys rotate. No broker."""

from __future__ import annotations

import base64
import json
from typing import Any

import nacl.encoding
import nacl.hash
import nacl.secret
import pytest

import sdk
from sdk._middleware import send_with_hooks_sync
from tests.unit.sdk.test_middleware import NOW, make_task, run
from topics import records

KEY = "my-secret-key"


def define(handler: Any, key: str = KEY, **options: Any) -> sdk.Function:
    mw = sdk.EncryptionMiddleware.factory(key, **options)
    client = sdk.Client(app_id="shop", brokers="unused:9092", middleware=[mw])
    return client.create_function(fn_id="fn", trigger=sdk.TriggerEvent(event="shop/*"))(handler)


def test_the_stored_shape_is_inngests_libsodium_box() -> None:
    sealed = sdk.Encryptor(KEY).encrypt({"card": "4242"})
    assert set(sealed) == {"__ENCRYPTED__", "__STRATEGY__", "data"}
    assert sealed["__ENCRYPTED__"] is True and sealed["__STRATEGY__"] == "inngest/libsodium"
    assert "4242" not in json.dumps(sealed)
    # Opened with libsodium directly, the way Inngest's middleware derives a string key.
    key = nacl.hash.generichash(KEY.encode(), digest_size=32,
                                encoder=nacl.encoding.RawEncoder)
    plain = nacl.secret.SecretBox(key).decrypt(base64.b64decode(sealed["data"]))
    assert json.loads(plain) == {"card": "4242"}
    # Random nonces: the same value encrypts differently each time.
    assert sdk.Encryptor(KEY).encrypt(1)["data"] != sdk.Encryptor(KEY).encrypt(1)["data"]


def test_keys_rotate_and_a_wrong_key_is_an_error() -> None:
    old = sdk.Encryptor("old-key").encrypt([1, 2])
    new = sdk.Encryptor("new-key", fallback_decryption_keys=["old-key", b"k" * 32])
    assert new.decrypt(old) == [1, 2]
    assert new.decrypt({"plain": True}) == {"plain": True}
    with pytest.raises(sdk.DecryptionError):
        sdk.Encryptor("new-key").decrypt(old)
    with pytest.raises(ValueError, match="secret_key: a bytes key must be 32 bytes"):
        sdk.Encryptor(b"short")
    with pytest.raises(TypeError, match="fallback_decryption_keys must be a list"):
        sdk.Encryptor(KEY, fallback_decryption_keys="old-key")  # type: ignore[arg-type]


def test_step_and_function_outputs_are_stored_encrypted_and_read_plain() -> None:
    seen: list[Any] = []

    async def fn(ctx: sdk.Context) -> Any:
        card = await ctx.step.run("card", lambda: {"number": "4242"})
        seen.append(card)
        return {"charged": card["number"]}

    crypt = sdk.Encryptor(KEY)
    first = run(define(fn), make_task()).outcomes[0]
    assert first.op == records.STEP_COMPLETED and first.output["__ENCRYPTED__"] is True
    assert crypt.decrypt(first.output) == {"number": "4242"}

    # The next execution gets the stored (encrypted) memo; the function sees it plain.
    end = run(define(fn), make_task({"card": {"data": first.output}})).outcomes[0]
    assert seen == [{"number": "4242"}]
    assert end.op == records.FUNCTION_COMPLETED
    assert crypt.decrypt(end.output) == {"charged": "4242"}
    assert "4242" not in json.dumps(end.output)


def test_event_data_field_is_decrypted_for_the_function_and_encrypted_on_send() -> None:
    crypt = sdk.Encryptor(KEY)
    got: list[Any] = []

    async def fn(ctx: sdk.Context) -> Any:
        got.append(ctx.event.data)
        await ctx.step.send_event("notify", sdk.Event(
            name="shop/notify", data={"user": 1, "encrypted": {"email": "a@b.c"}}))

    task = make_task(data={"order_id": 7, "encrypted": crypt.encrypt({"ssn": "123"})})
    result = run(define(fn), task)
    assert got == [{"order_id": 7, "encrypted": {"ssn": "123"}}]
    (sent,) = result.sends["notify"]
    assert sent.data["user"] == 1  # other fields stay plain, for triggers and matches
    assert crypt.decrypt(sent.data["encrypted"]) == {"email": "a@b.c"}


def test_a_waited_for_event_is_decrypted_and_invoke_data_encrypted() -> None:
    crypt = sdk.Encryptor(KEY)
    got: list[Any] = []

    async def fn(ctx: sdk.Context) -> Any:
        paid = await ctx.step.wait_for_event("paid", event="shop/paid", timeout="1h")
        got.append(paid.data if paid else None)
        await ctx.step.invoke_by_id("child", function_id="child",
                                    data={"plain": 1, "encrypted": {"secret": 2}})

    waited = {"name": "shop/paid", "id": "e1", "ts": NOW,
              "data": {"encrypted": crypt.encrypt({"amount": 5})}}
    o = run(define(fn), make_task({"paid": {"data": waited}})).outcomes[0]
    assert got == [{"encrypted": {"amount": 5}}]
    assert o.op == records.STEP_INVOKE and o.invoke is not None
    assert o.invoke["data"]["plain"] == 1
    assert crypt.decrypt(o.invoke["data"]["encrypted"]) == {"secret": 2}


def test_decrypt_only_and_a_wrong_key_fails_the_execution() -> None:
    async def fn(ctx: sdk.Context) -> Any:
        return await ctx.step.run("a", lambda: "plain")

    o = run(define(fn, decrypt_only=True), make_task()).outcomes[0]
    assert o.output == "plain"

    foreign = sdk.Encryptor("other-key").encrypt("x")
    o = run(define(fn), make_task({"a": {"data": foreign}})).outcomes[0]
    assert (o.op, o.error["name"], o.retriable) == (records.FUNCTION_FAILED,
                                                    "DecryptionError", True)


def test_client_send_encrypts_the_field_and_leaves_the_callers_event_alone() -> None:
    client = sdk.Client(app_id="shop", brokers="unused:9092",
                        middleware=[sdk.EncryptionMiddleware.factory(KEY)])
    event = sdk.Event(name="shop/x", data={"encrypted": "secret", "n": 1})
    sent: list[sdk.Event] = []
    send_with_hooks_sync(client, event, lambda events: sent.extend(events) or ["i"])
    assert event.data == {"encrypted": "secret", "n": 1}
    assert sent[0].data["n"] == 1
    assert sdk.Encryptor(KEY).decrypt(sent[0].data["encrypted"]) == "secret"


def test_a_sync_function_run_to_its_end_by_sdk_testing_reads_plain_stores_ciphertext() -> None:
    seen: list[Any] = []

    def handler(ctx: sdk.ContextSync) -> Any:
        card = ctx.step.run("card", lambda: {"number": "4242"})
        seen.append((card, ctx.event.data))
        return card["number"][-2:]

    crypt = sdk.Encryptor(KEY)
    trigger = sdk.Event(name="shop/pay", data={"encrypted": crypt.encrypt({"user": 9})})
    result = sdk.testing.trigger(define(handler), trigger)
    assert result.status == "completed"
    assert seen[-1] == ({"number": "4242"}, {"encrypted": {"user": 9}})
    # What the run stores (and sdk.testing reports) is ciphertext.
    assert crypt.decrypt(result.output) == "42"
    assert crypt.decrypt(result.step("card").output) == {"number": "4242"}
