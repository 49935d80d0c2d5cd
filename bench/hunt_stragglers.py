"""Hunt for runs that never finish under load (an open question; see the README).

``python -m bench.hunt_stragglers [--rounds N] [--rate 500] [--concurrency 100]`` runs
the 500/s open-loop section against a fresh dev broker per round and, when the observer
misses a run, keeps the broker up and reports where the run's trail stops: the event on
``events``, its ``run.requested`` / outcomes on ``runs``, its tasks on ``tasks``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.launch import section_broker
from bench.runs import offer, start_ours, warm_up
from topics.catalog import Catalog
from topics.codec import DecodeError, decode


def trail(broker: str, topic: str, partitions: int, needles: set[str]) -> list[str]:
    """Every record of ``topic`` that mentions one of ``needles``, described."""
    c = Consumer({"bootstrap.servers": broker, "group.id": uuid.uuid4().hex,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    at_end: set[int] = set()
    found: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while len(at_end) < partitions and time.monotonic() < deadline:
            for m in c.consume(5000, 0.5):
                if m.error():
                    at_end.add(m.partition() or 0)
                    continue
                value = m.value() or b""
                if any(n.encode() in value for n in needles):
                    try:
                        rec = decode(value)
                        what = f"{rec.KIND} {getattr(rec, 'seq', '')}{getattr(rec, 'task_seq', '')}"
                    except DecodeError as exc:
                        what = f"undecodable: {exc}"
                    found.append(f"{topic}[{m.partition()}]@{m.offset()}: {what}")
    finally:
        c.close()
    return found


def one_round(rate: float, concurrency: int, n: int) -> int:
    with section_broker(None) as broker:
        system = start_ours(broker, 8, Path(tempfile.mkdtemp()), concurrency)
        try:
            warm_up(system)
            assert system.sender is not None
            scheduled, _, _ = asyncio.run(offer(system.sender, rate, n, "hunt"))
            runs = {}
            for id_ts in scheduled:
                event_id, _, ts = id_ts.partition("\x1f")
                runs[system.key_for(event_id, int(ts))] = event_id
            deadline = time.monotonic() + 40
            missing = list(runs)
            while missing and time.monotonic() < deadline:
                with system.observer.lock:
                    missing = [k for k in runs if k not in system.observer.seen]
                time.sleep(0.5)
            print(f"round: {len(missing)} of {n} runs not seen finished", flush=True)
            for run_id in missing[:5]:
                print(f"  run {run_id} (event {runs[run_id]}): engine says "
                      f"{system.run_status(run_id)}")
            if missing:
                cat = Catalog(system.settings)
                needles = set(missing) | {runs[k] for k in missing}
                for topic in (cat.events, cat.runs, cat.tasks):
                    for line in trail(broker, topic, 8, needles):
                        print("  " + line)
            return len(missing)
        finally:
            system.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--runs", type=int, default=12_500)
    args = p.parse_args()
    total = sum(one_round(args.rate, args.concurrency, args.runs) for _ in range(args.rounds))
    print(f"{total} stragglers in {args.rounds} rounds")
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
