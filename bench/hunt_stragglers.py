"""Hunt for runs that never finish under load (an open question; see the README).

``python -m bench.hunt_stragglers [--rounds N] [--rate 500] [--concurrency 100]`` runs
the 500/s open-loop section against a fresh dev broker per round and, when the observer
misses a run, waits until the engine's consumer lag is zero (``GET /health``), asks the
engine about each unseen run again (a 404 is told from a timeout or other error) and,
for a run still not found, reports where its trail stops: the event on ``events``, its
``run.requested`` / outcomes on ``runs``, its tasks on ``tasks``. Exit status 1 if any
acknowledged event's run is not found once the engine has caught up.
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
from bench.runs import NOT_FOUND, account_for_unseen, offer, start_ours, warm_up
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
            scheduled, _, _, _ = asyncio.run(offer(system.sender, rate, n, "hunt"))
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
            print(f"round: {len(missing)} of {n} runs not seen finished 40 s after the "
                  "last send", flush=True)
            if not missing:
                return 0
            # Before calling anything lost: wait for the engine to catch up (lag 0 on
            # /health), then ask again, telling a 404 from an error.
            found = account_for_unseen(system, missing)
            print(f"  after the engine caught up ({found.get('catch_up')}): "
                  f"{found['late']}", flush=True)
            lost = [k for k, status in found["statuses"].items() if status == NOT_FOUND]
            for run_id, status in list(found["unseen_runs"].items())[:5]:
                print(f"  run {run_id} (event {runs[run_id]}): engine says {status}")
            if lost:
                cat = Catalog(system.settings)
                needles = set(lost) | {runs[k] for k in lost}
                for topic in (cat.events, cat.runs, cat.tasks):
                    for line in trail(broker, topic, 8, needles):
                        print("  " + line)
            return len(lost)
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
    print(f"{total} runs not found once the engine's lag was zero, in {args.rounds} rounds "
          f"of {args.runs} runs at {args.rate:g}/s")
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
