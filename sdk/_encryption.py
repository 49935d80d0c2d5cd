"""End-to-end encryption of step outputs and event data, as Inngest's
``inngest_encryption`` middleware does.

What is stored on Kafka (the ``runs`` and ``events`` topics, and so the state tables,
the HTTP API and the dashboard) is ciphertext; the function sees plain values. The
stored shape and the cipher are Inngest's, so values encrypted by either SDK with the
same key decrypt in the other:

    {"__ENCRYPTED__": true, "__STRATEGY__": "inngest/libsodium", "data": "<base64>"}

where ``data`` is a libsodium secret box (XSalsa20-Poly1305, random nonce first) of
the value's JSON. Encrypted: every step output, the function's output, and the
``event_encryption_field`` ("encrypted") of event data sent with ``Client.send``,
``step.send_event`` and ``step.invoke``. Everything else in an event stays plain, so
triggers, expressions and ``wait_for_event`` matches keep working on it.

Needs PyNaCl: ``pip install 'stepstream[encryption]'``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from sdk._events import Event
from sdk._middleware import MiddlewareSync, StepMemos, TransformOutputResult
from topics import records

if TYPE_CHECKING:
    from sdk._client import Client
    from sdk._context import Context
    from sdk._function import Function

log = logging.getLogger("stepstream.encryption")

ENCRYPTION_MARKER: Final = "__ENCRYPTED__"
STRATEGY_MARKER: Final = "__STRATEGY__"
STRATEGY: Final = "inngest/libsodium"
DEFAULT_EVENT_FIELD: Final = "encrypted"

Key = bytes | str


class DecryptionError(Exception):
    """An encrypted value that none of the keys opens (wrong key, or altered data)."""


def _nacl() -> Any:
    try:
        import nacl.encoding
        import nacl.hash
        import nacl.secret
    except ImportError:
        raise ImportError("sdk.EncryptionMiddleware needs PyNaCl: "
                          "pip install 'stepstream[encryption]'") from None
    return nacl


def is_encrypted(value: object) -> bool:
    """True for a value in the encrypted shape of this strategy."""
    return (isinstance(value, dict) and value.get(ENCRYPTION_MARKER) is True
            and value.get(STRATEGY_MARKER) == STRATEGY)


class Encryptor:
    """Encrypts and decrypts values with ``secret_key``; ``fallback_decryption_keys``
    also decrypt (for key rotation: encrypt with the new key, keep the old ones here).

    A key is 32 bytes, or a string (hashed to 32 bytes with BLAKE2b, as Inngest does).
    Use it to read encrypted outputs outside a function, e.g. a run's output from the
    HTTP API: ``sdk.Encryptor(key).decrypt(run["output"])``.
    """

    def __init__(self, secret_key: Key, *,
                 fallback_decryption_keys: Sequence[Key] | None = None) -> None:
        nacl = _nacl()
        self._encoder = nacl.encoding.Base64Encoder
        self._box = _box(nacl, secret_key, "secret_key")
        if fallback_decryption_keys is not None and (
                isinstance(fallback_decryption_keys, str | bytes)
                or not isinstance(fallback_decryption_keys, Sequence)):
            raise TypeError("fallback_decryption_keys must be a list of keys")
        self._boxes = [self._box, *(_box(nacl, k, "fallback_decryption_keys")
                                    for k in fallback_decryption_keys or ())]

    def encrypt(self, value: Any) -> dict[str, Any]:
        """``value`` (JSON-compatible) in the encrypted shape; already encrypted
        values are returned as they are."""
        if is_encrypted(value):
            return value
        sealed = self._box.encrypt(json.dumps(value).encode(), encoder=self._encoder)
        return {ENCRYPTION_MARKER: True, STRATEGY_MARKER: STRATEGY,
                "data": sealed.decode("ascii")}

    def decrypt(self, value: Any) -> Any:
        """The plain value of an encrypted one; anything else is returned as it is.
        Raises :class:`DecryptionError` if no key opens it."""
        if not is_encrypted(value) or not isinstance(value.get("data"), str):
            return value
        sealed = value["data"].encode("ascii")
        for box in self._boxes:
            try:
                return json.loads(box.decrypt(sealed, encoder=self._encoder))
            except Exception:  # wrong key or altered data: try the next key
                continue
        raise DecryptionError("an encrypted value could not be decrypted with the "
                              "secret key or any fallback decryption key")


def _box(nacl: Any, key: object, arg: str) -> Any:
    if isinstance(key, str):
        if not key:
            raise ValueError(f"{arg}: a key must not be empty")
        key = nacl.hash.generichash(key.encode("utf-8"),
                                    digest_size=nacl.secret.SecretBox.KEY_SIZE,
                                    encoder=nacl.encoding.RawEncoder)
    if not isinstance(key, bytes):
        raise TypeError(f"{arg}: a key must be bytes or str, got {type(key).__name__}")
    if len(key) != nacl.secret.SecretBox.KEY_SIZE:
        raise ValueError(f"{arg}: a bytes key must be {nacl.secret.SecretBox.KEY_SIZE} "
                         f"bytes, got {len(key)} (or pass a string to hash)")
    return nacl.secret.SecretBox(key)


class EncryptionMiddleware(MiddlewareSync):
    """Middleware encrypting step outputs, the function's output and the
    ``event_encryption_field`` of event data; it decrypts them for the function.

    Pass ``EncryptionMiddleware.factory(key)`` in ``Client(middleware=[...])`` or
    ``create_function(middleware=[...])``. ``decrypt_only=True`` decrypts without
    encrypting (to turn encryption off without losing what is stored);
    ``fallback_decryption_keys`` are tried after ``secret_key`` when decrypting.
    """

    def __init__(self, client: Client, raw_request: object, secret_key: Key | Encryptor,
                 *, decrypt_only: bool = False,
                 event_encryption_field: str = DEFAULT_EVENT_FIELD,
                 fallback_decryption_keys: Sequence[Key] | None = None) -> None:
        super().__init__(client, raw_request)
        self._crypt = (secret_key if isinstance(secret_key, Encryptor) else
                       Encryptor(secret_key, fallback_decryption_keys=fallback_decryption_keys))
        if not isinstance(event_encryption_field, str) or not event_encryption_field:
            raise TypeError("event_encryption_field must be a non-empty string")
        self._decrypt_only = decrypt_only
        self._field = event_encryption_field

    @classmethod
    def factory(cls, secret_key: Key, *, decrypt_only: bool = False,
                event_encryption_field: str = DEFAULT_EVENT_FIELD,
                fallback_decryption_keys: Sequence[Key] | None = None,
                ) -> Callable[[Client, object], EncryptionMiddleware]:
        """What to put in a ``middleware=`` list. The keys are checked here, once."""
        crypt = Encryptor(secret_key, fallback_decryption_keys=fallback_decryption_keys)
        if not isinstance(event_encryption_field, str) or not event_encryption_field:
            raise TypeError("event_encryption_field must be a non-empty string")

        def make(client: Client, raw_request: object) -> EncryptionMiddleware:
            return cls(client, raw_request, crypt, decrypt_only=decrypt_only,
                       event_encryption_field=event_encryption_field)

        return make

    # -- events ----------------------------------------------------------------------

    def _encrypt_field(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get(self._field) is None:
            return data
        return {**data, self._field: self._crypt.encrypt(data[self._field])}

    def _decrypt_event_data(self, data: dict[str, Any]) -> dict[str, Any]:
        if is_encrypted(data):
            # All of the data was encrypted (by another producer); plain fields beside
            # the markers (an invoke's own) are kept.
            plain = self._crypt.decrypt(data)
            if not isinstance(plain, dict):
                raise DecryptionError("encrypted event data is not a map")
            rest = {k: v for k, v in data.items()
                    if k not in (ENCRYPTION_MARKER, STRATEGY_MARKER, "data")}
            return {**rest, **plain}
        # The configured field first: another producer may use another field name.
        for key in sorted(data, key=lambda k: k != self._field):
            if is_encrypted(data[key]):
                return {**data, key: self._crypt.decrypt(data[key])}
        return data

    def before_send_events(self, events: list[Event]) -> None:
        """Encrypt the field of each event's data before it is sent."""
        if self._decrypt_only:
            return
        for event in events:
            if isinstance(event, Event) and isinstance(event.data, dict):
                event.data = self._encrypt_field(event.data)

    # -- executions ------------------------------------------------------------------

    def transform_input(self, ctx: Context, function: Function, steps: StepMemos) -> None:
        """Decrypt memoized step outputs and the triggering events for the function."""
        for memo in steps.values():
            memo.data = self._crypt.decrypt(memo.data)
            if _is_event(memo.data):
                # A wait_for_event step's value is the event that arrived.
                memo.data = {**memo.data, "data": self._decrypt_event_data(memo.data["data"])}
        for event in (ctx.event, *ctx.events):
            event.data = self._decrypt_event_data(event.data)

    def transform_output(self, result: TransformOutputResult) -> None:
        """Encrypt what is stored: the output, and an invoke's event data field."""
        if self._decrypt_only:
            return
        if result.has_output():
            result.output = self._crypt.encrypt(result.output)
        step = result.step
        if step is not None and step.op == records.STEP_INVOKE and step.opts is not None:
            payload = step.opts.get("payload")
            if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
                payload["data"] = self._encrypt_field(payload["data"])


def _is_event(value: object) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("name"), str)
            and isinstance(value.get("data"), dict))
