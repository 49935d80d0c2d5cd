"""Event bodies without a broker: Inngest's id seed and the per-request cap."""

from __future__ import annotations

import base64
import json

import pytest

from engine.api.event_body import MAX_EVENTS_PER_REQUEST, Seed, parse_seed, seeded_event_id
from engine.api.ingest import IngestError, prepare_body
from engine.events import validate_event
from topics.ids import ulid_ms
from topics.settings import Settings

# The example in the Inngest server's SeededIDFromString documentation.
SEED = "1743130137367,eii2YKXRVTJPuA=="
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_entropy(ulid: str) -> bytes:
    value = 0
    for ch in ulid:
        value = value * 32 + _CROCKFORD.index(ch)
    return (value & ((1 << 80) - 1)).to_bytes(10, "big")


def test_seeded_ids_are_inngests() -> None:
    seed = parse_seed(SEED)
    entropy = base64.b64decode("eii2YKXRVTJPuA==")
    assert seed == Seed(1743130137367, entropy)
    for index in (0, 1, 4999):
        event_id = seeded_event_id(seed, index)
        assert len(event_id) == 26 and ulid_ms(event_id) == 1743130137367
        # The server adds the event's 1-based position to the last four entropy bytes.
        tail = (int.from_bytes(entropy[6:], "big") + index + 1) % 2**32
        assert ulid_entropy(event_id) == entropy[:6] + tail.to_bytes(4, "big")
    # The addition wraps within those four bytes, as Go's uint32 does.
    wrap = Seed(5, b"\x00" * 6 + b"\xff" * 4)
    assert ulid_entropy(seeded_event_id(wrap, 0)) == b"\x00" * 10


@pytest.mark.parametrize("value", [None, "", "abc", "1,2,3", "-5,eii2YKXRVTJPuA==",
                                   "0,eii2YKXRVTJPuA==", f"{2**48},eii2YKXRVTJPuA==",
                                   "12,not base64!", "12,AAAA", "١٢,eii2YKXRVTJPuA=="])
def test_a_malformed_seed_is_ignored(value: str | None) -> None:
    assert parse_seed(value) is None


def _ids(body: object, seed: str | None) -> list[str]:
    return [i for i, *_ in prepare_body(json.dumps(body).encode(), Settings(), 1000, seed)]


def test_a_seed_gives_the_same_ids_to_the_same_request() -> None:
    body = [{"name": "a"}, {"name": "b", "id": "mine"}, {"name": "c", "id": ""}]
    first = _ids(body, SEED)
    assert first == _ids(body, SEED)
    seed = parse_seed(SEED)
    assert seed is not None
    # An event's own id wins; the position still counts every event.
    assert first == [seeded_event_id(seed, 0), "mine", seeded_event_id(seed, 2)]
    assert not set(_ids(body, None)) & {first[0], first[2]}
    assert _ids({"name": "a"}, SEED) == [seeded_event_id(seed, 0)]


def test_events_per_request_are_capped() -> None:
    events = [{"name": "a"}] * MAX_EVENTS_PER_REQUEST
    assert len(_ids(events, SEED)) == MAX_EVENTS_PER_REQUEST
    with pytest.raises(IngestError) as info:
        _ids([*events, {"name": "a"}], None)
    assert info.value.status == 413
    assert f"{MAX_EVENTS_PER_REQUEST + 1} events" in info.value.message
    assert f"limit of {MAX_EVENTS_PER_REQUEST}" in info.value.message


def test_empty_id_and_zero_ts_mean_not_set_as_in_inngest() -> None:
    event = validate_event({"name": "n", "id": "", "ts": 0}, Settings(), now=1234)
    assert event.ts == 1234 and event.id  # a generated id, as for a missing one
    kept = validate_event({"name": "n", "id": "mine", "ts": 5}, Settings(), now=1234)
    assert (kept.id, kept.ts) == ("mine", 5)
