"""The Faust peer of the timer and holding benchmarks: what a Faust user writes for
many per-key timers.

An agent stores each event's due time in a ``rocksdb://`` table; an ``app.timer`` every
100 ms scans the table for due entries (skipped while the earliest known due time is in
the future) and sends each due key to a ``fired`` topic on its own partition, where a
second agent deletes the entry (tables may only be changed from a stream) and runs the
same ``woke`` step as stepstream's app (:mod:`bench.timer_app`), writing ``{"id",
"due", "fired", "woke"}`` to ``done``.

The benchmark side starts it with :func:`start_faust_peer`; the child process is
``python -m bench.faust_timers`` (settings from ``BENCH_FAUST_*`` variables, see
:func:`bench.launch.faust_env`) and writes its counters to a JSON file every 0.5 s.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

import sdk
from bench.common import Observer, done_id, now_ms, percentile
from bench.launch import (
    Child,
    bench_settings,
    create_topics,
    faust_env,
    faust_missing,
    new_prefix,
)
from bench.timer_app import woke
from engine.cli.provision import ensure_topics
from topics.settings import Settings


@dataclass
class FaustPeer:
    """The running peer: its child process, its counters, and a client to send to it."""

    settings: Settings
    child: Child
    stats_path: Path
    datadir: Path
    sender: sdk.Client
    observer: Observer | None = None

    def stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}

    def check_alive(self) -> None:
        if not self.child.alive:
            raise RuntimeError(f"faust peer exited ({self.child.proc.returncode}); "
                               f"log tail:\n{self.child.tail()}")

    def close(self) -> None:
        self.child.stop()
        if self.observer is not None:
            self.observer.close()
        self.sender.close(10)


def start_faust_peer(broker: str, partitions: int, work: Path, *, scan_ms: int = 100,
                     store: str = "rocksdb://", observe_done: bool = True) -> FaustPeer:
    """Start the peer on a fresh prefix of ``broker``, with ``scan_ms`` between scans;
    ``observe_done``: watch its ``done`` topic for woken keys."""
    missing = faust_missing()
    if missing:
        raise RuntimeError(missing)
    settings = bench_settings(broker, new_prefix("faust-timers"), partitions)
    ensure_topics(settings)  # its ``events`` topic, so the SDK client can send to it
    p = settings.prefix
    create_topics(broker, [p + "fired", p + "done"], partitions)
    work.mkdir(parents=True, exist_ok=True)
    stats_path = work / "faust-stats.json"
    env = {**faust_env(settings, work), "BENCH_FAUST_STATS": str(stats_path),
           "BENCH_FAUST_SCAN_MS": str(scan_ms), "BENCH_FAUST_STORE": store}
    child = Child("faust", "bench.faust_timers", [], env, work / "faust.log")
    peer = FaustPeer(settings, child, stats_path, work / "faust-data",
                     sdk.Client("bench-sender", settings=settings))
    if observe_done:
        peer.observer = Observer(settings, p + "done", done_id)
    return peer


def main() -> None:
    """The Faust peer app (the child process; see the module docstring)."""
    from bench.faust_common import make_app, run_worker, write_result
    from topics.codec import decode
    from topics.records import Event

    prefix = os.environ["BENCH_FAUST_PREFIX"]
    partitions = int(os.environ["BENCH_FAUST_PARTITIONS"])
    stats_path = os.environ["BENCH_FAUST_STATS"]
    scan_s = int(os.environ.get("BENCH_FAUST_SCAN_MS", "100")) / 1000
    app = make_app(prefix + "faust-timers", os.environ["BENCH_FAUST_BROKER"],
                   Path(os.environ["BENCH_FAUST_DATADIR"]), partitions,
                   int(os.environ.get("BENCH_FAUST_FETCH_WAIT_MS", "10")),
                   store=os.environ.get("BENCH_FAUST_STORE", "rocksdb://"))

    def topic(name: str) -> Any:
        return app.topic(prefix + name, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", partitions=partitions)

    events, fired, done = topic("events"), topic("fired"), topic("done")
    table = app.Table("timers", default=None, key_type=bytes, value_type=bytes,
                      partitions=partitions)
    st: dict[str, Any] = {"parked": 0, "parked_by_tag": {}, "first_park": None,
                          "last_park": None, "fired": 0, "done": 0, "scans": 0, "scan_ms": [],
                          "scanned_max": 0}
    # The earliest due time not yet fired (0: unknown, scan), and keys sent to ``fired``
    # whose entry is not deleted yet (so the next scan does not fire them again).
    earliest = [0]
    inflight: set[bytes] = set()

    @app.agent(events)
    async def park(stream: Any) -> None:
        import faust

        async for _key, value in stream.items():
            event = decode(value, expect=(Event,))
            assert isinstance(event, Event)
            due = int(event.data["due_ms"])
            current = faust.current_event()
            assert current is not None  # inside an agent there is always one
            partition = current.message.partition
            table[event.id.encode()] = msgpack.packb(
                {"due": due, "p": partition, "event": {"name": event.name, "id": event.id,
                                                       "data": event.data, "ts": event.ts}})
            now = time.time()
            st["parked"] += 1
            tag = event.id.rpartition("-")[0]
            st["parked_by_tag"][tag] = st["parked_by_tag"].get(tag, 0) + 1
            st["first_park"] = st["first_park"] or now
            st["last_park"] = now
            earliest[0] = min(earliest[0], due) if earliest[0] else due

    @app.agent(fired)
    async def wake(stream: Any) -> None:
        async for key, value in stream.items():
            msg = msgpack.unpackb(value, raw=False)
            table.pop(key, None)
            inflight.discard(key)
            woke_ms = await woke()
            await done.send(key=key, value=msgpack.packb({**msg, "woke": woke_ms}))
            st["done"] += 1

    @app.timer(scan_s)
    async def scan() -> None:
        now = now_ms()
        if earliest[0] and earliest[0] > now:
            return
        t0 = time.perf_counter()
        due_now: list[tuple[bytes, int, int]] = []
        next_due = 0
        n = 0
        for key, raw in table.items():
            n += 1
            if key in inflight:
                continue
            entry = msgpack.unpackb(raw, raw=False)
            if entry["due"] <= now:
                due_now.append((key, entry["due"], entry["p"]))
            elif not next_due or entry["due"] < next_due:
                next_due = entry["due"]
        for key, due, partition in due_now:
            inflight.add(key)
            await fired.send(key=key, partition=partition,
                             value=msgpack.packb({"id": key.decode(), "due": due,
                                                  "fired": now}))
        st["fired"] += len(due_now)
        earliest[0] = next_due
        st["scans"] += 1
        st["scanned_max"] = max(st["scanned_max"], n)
        st["scan_ms"].append(round((time.perf_counter() - t0) * 1000, 2))

    @app.timer(0.5)
    async def report() -> None:
        scans = st["scan_ms"]
        write_result(stats_path, {**{k: v for k, v in st.items() if k != "scan_ms"},
                                  "scan_ms_p50": percentile(scans, 50),
                                  "scan_ms_max": max(scans) if scans else None,
                                  "store": os.environ.get("BENCH_FAUST_STORE")})

    run_worker(app)


if __name__ == "__main__":
    main()
