"""Poison records on every topic the engine and workers read, under load: garbage bytes,
JSON, empty values, tombstones, oversized values and records of the wrong kind, under
keys that are missing, empty or not UTF-8. Nothing may exit, every partition goes on
(the load's runs all finish)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter

import msgpack
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from tests.chaos.scenarios import Options, Result, finish, start
from tests.chaos.stack import ChaosStack, Load
from topics.settings import MIB

OVERSIZED = 9 * MIB
KINDS = ["garbage", "json", "empty", "tombstone", "oversized", "wrong kind"]
# Record kinds of the wire contract, each sent where it does not belong (or half-filled).
RECORD_KINDS = ["event", "function.registered", "run.requested", "outcomes.reported",
                "timer.fired", "task", "wait.registered", "wait.resolved", "run.cancel",
                "dead.letter", "cancellation.created", "run.rerun"]


def poison_value(kind: str, rng: random.Random) -> bytes | None:
    if kind == "garbage":
        return rng.randbytes(rng.randint(1, 300))
    if kind == "json":
        return json.dumps(rng.choice([{"name": 1}, [1, 2], "x", {"k": "task"}, None,
                                      {"name": "chaos/go", "data": "no map"}])).encode()
    if kind == "empty":
        return b""
    if kind == "tombstone":
        return None
    if kind == "oversized":
        return b"\x00" * OVERSIZED
    return bytes(msgpack.packb({"k": rng.choice(RECORD_KINDS), "v": 1,
                                "run_id": rng.choice(["", "r", 7]), "junk": [1, {"x": None}]}))


def poison_key(rng: random.Random) -> bytes | None:
    """Mostly a plain key; now and then none, an empty one or bytes that are not UTF-8
    (a tombstone on ``functions`` names its function by its key)."""
    return rng.choice([uuid.uuid4().hex.encode()] * 3 + [None, b"", b"\xff\xfe" +
                                                        rng.randbytes(8)])


def poison(stack: ChaosStack, opts: Options) -> Result:
    """Poison records (garbage, JSON, empty, tombstones, 9 MiB, wrong kind) on every
    partition of every topic read by the engine or the workers, under load."""
    result = Result("poison")
    start(stack)
    cat = stack.catalog
    topics = [cat.events, cat.runs, cat.waits, cat.tasks, cat.functions, cat.cancellations,
              cat.engines]
    producer = Producer({"bootstrap.servers": stack.settings.brokers,
                         "message.max.bytes": OVERSIZED + MIB})
    meta = producer.list_topics(timeout=10).topics
    counts = {t: len(meta[t].partitions) for t in topics}
    load = Load(stack, "chaos/go", opts.rate)
    tried: Counter[str] = Counter()
    deadline = load.started + opts.seconds
    while time.monotonic() < deadline:
        topic = opts.rng.choice(topics)
        # Oversized ones are few: each is 9 MiB in a memory-only broker.
        kind = opts.rng.choice([k for k in KINDS if k != "oversized"
                                or tried[k] < 2 * len(topics)])
        producer.produce(topic, poison_value(kind, opts.rng), poison_key(opts.rng),
                         partition=opts.rng.randrange(counts[topic]))
        producer.poll(0)
        tried[kind] += 1
        time.sleep(opts.rng.uniform(0.05, 0.3))
    assert producer.flush(30) == 0
    result.bad_inputs = sum(tried.values())
    result.faults = {}
    result.notes.append("poison sent: " + ", ".join(f"{n} {k}" for k, n in tried.items()))
    done = finish(stack, result, [load], opts)
    done.notes.append(f"dead letters on the dlq topic: {dead_letters(stack)}")
    return done


def dead_letters(stack: ChaosStack) -> int:
    """How many records the dlq topic holds (read to its end)."""
    c = Consumer({"bootstrap.servers": stack.settings.brokers, "group.id": uuid.uuid4().hex,
                  "enable.partition.eof": True})
    parts = list(range(stack.settings.partitions))
    c.assign([TopicPartition(stack.catalog.dlq, p, 0) for p in parts])
    n, at_end = 0, set[int]()
    deadline = time.monotonic() + 30
    try:
        while len(at_end) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                err = m.error()
                if err is None:
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition() or 0)
    finally:
        c.close()
    return n
