"""``python -m bench.engine_probe <engine CLI args>``: the shipped engine's CLI, unchanged,
plus an idle thread that, asked after a measurement, writes where the engine's memory
is and what giving parts of it back frees (the holding benchmark's breakdown).

Nothing in the engine is replaced or patched: the probe finds the open partition stores
among the process's objects when asked (:func:`open_stores`) and reads their public
attributes. Until then its thread only checks, every 0.3 s, whether the request file
(``$BENCH_DIAG_REQUEST``) exists. The breakdown changes the engine (it flushes the
memtables and empties the decoded-state caches), so it is asked for last.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import proc_memory
from engine.store.partition import PartitionStore

REQUEST_ENV = "BENCH_DIAG_REQUEST"


def probe_env(work: Path) -> dict[str, str]:
    """The environment that tells a probed engine where requests for a breakdown appear."""
    return {REQUEST_ENV: str(work / "diag-request")}


def open_stores() -> list[PartitionStore]:
    """The partition stores (``runs`` and ``waits`` databases) open in this process.

    Objects frozen by ``gc.freeze()`` are not listed; the engine freezes once, when its
    processor starts, before it opens any store (the breakdown counts the stores)."""
    return [o for o in gc.get_objects() if isinstance(o, PartitionStore) and not o.closed]


def main(argv: list[str]) -> int:
    """The engine CLI with ``argv``, and the thread that answers breakdown requests."""
    from engine.cli import main as cli_main

    request = Path(os.environ[REQUEST_ENV])

    def serve_requests() -> None:
        while True:
            time.sleep(0.3)
            if request.exists():
                request.unlink()
                try:
                    result = diagnose(open_stores())
                except Exception as exc:
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                tmp = request.with_suffix(".tmp")
                tmp.write_text(json.dumps(result))
                tmp.replace(request.with_suffix(".json"))

    threading.Thread(target=serve_requests, name="bench-diag", daemon=True).start()
    return int(cli_main(argv) or 0)


def _deep_size(obj: Any) -> int:
    """Bytes of ``obj`` and what it holds, dict keys left out (msgpack interns them, so
    every state shares them)."""
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(v) for v in obj.values())
    elif isinstance(obj, list | tuple):
        size += sum(_deep_size(v) for v in obj)
    return size


def _smaps(pid: int) -> dict[str, float]:
    """Resident MB by kind of mapping: the brk heap (glibc's main arena), anonymous
    mappings (CPython's pymalloc arenas, glibc's thread arenas, large allocations), and
    file-backed pages (code)."""
    out = {"heap": 0.0, "anon": 0.0, "files": 0.0}
    kind = "files"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split()
                if not head:
                    continue
                if "-" in head[0] and not head[0].endswith(":"):
                    name = head[5] if len(head) > 5 else ""
                    kind = ("heap" if name == "[heap]" else "files" if name.startswith("/")
                            else "anon")
                elif head[0] == "Rss:":
                    out[kind] += int(head[1]) / 1024
    except OSError:
        pass
    return {k: round(v, 1) for k, v in out.items()}


def _pymalloc_stats() -> dict[str, float]:
    """CPython's allocator figures (``sys._debugmallocstats``, which writes to fd 2)."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out: dict[str, float] = {}
    for label, key in (("# arenas allocated current", "arenas"),
                       ("bytes in allocated blocks", "allocated_mb"),
                       ("bytes in available blocks", "available_mb"),
                       ("unused pools", "unused_pools_mb")):
        m = re.search(re.escape(label) + r"[^=]*=\s*([\d,]+)", text)
        if m:
            value = float(m.group(1).replace(",", ""))
            out[key] = value if key == "arenas" else round(value / 1e6, 1)
    return out


def diagnose(stores: list[PartitionStore]) -> dict[str, Any]:
    """Where the engine's memory is, then what giving parts of it back frees (run in
    the engine process after the measurement: it flushes memtables and empties the
    state caches)."""
    pid = os.getpid()
    libc = ctypes.CDLL("libc.so.6")
    live = [s for s in stores if not s.closed]
    out: dict[str, Any] = {"stores": len(live), "rss_mb": proc_memory(pid).get("rss_mb")}
    caches = [s.cache for s in live]
    sample = [st for c in caches for st in list(c.values())[:100]]
    per_state = sum(_deep_size(st) for st in sample) / len(sample) if sample else 0.0
    cached = sum(len(c) for c in caches)
    out["cache"] = {"runs": cached, "bytes_per_state": round(per_state),
                    "est_mb": round(cached * per_state / 1e6, 1),
                    "limit_per_partition": live[0].cache_runs if live else None}
    props = ("rocksdb.cur-size-all-mem-tables", "rocksdb.estimate-table-readers-mem",
             "rocksdb.block-cache-usage", "rocksdb.estimate-num-keys",
             "rocksdb.num-immutable-mem-table")
    out["rocksdb"] = {p.removeprefix("rocksdb."): sum(s.db.property_int_value(p) or 0
                                                      for s in live) for p in props}
    # One block cache serves every database (StateMemory): each reports the same usage.
    out["rocksdb"]["block-cache-usage"] = max(
        (s.db.property_int_value("rocksdb.block-cache-usage") or 0 for s in live), default=0)
    kinds: dict[str, int] = {}
    for obj in gc.get_objects():
        kinds[type(obj).__name__] = kinds.get(type(obj).__name__, 0) + 1
    out["gc_objects"] = dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:8])
    out["python_allocated_blocks"] = sys.getallocatedblocks()
    out["smaps"] = _smaps(pid)
    out["pymalloc"] = _pymalloc_stats()
    steps: list[tuple[str, float | None]] = []
    gc.collect()
    libc.malloc_trim(0)
    steps.append(("after gc + malloc_trim", proc_memory(pid).get("rss_mb")))
    for s in live:
        s.db.flush()
    libc.malloc_trim(0)
    steps.append(("after flushing memtables to SST files", proc_memory(pid).get("rss_mb")))
    for c in caches:
        c.clear()
    gc.collect()
    libc.malloc_trim(0)
    steps.append(("after emptying the decoded-state caches", proc_memory(pid).get("rss_mb")))
    out["python_allocated_blocks_after"] = sys.getallocatedblocks()
    out["rocksdb_after_flush"] = {p.removeprefix("rocksdb."): sum(
        s.db.property_int_value(p) or 0 for s in live) for p in props}
    out["smaps_after"] = _smaps(pid)
    out["pymalloc_after"] = _pymalloc_stats()
    out["steps"] = steps
    return out


def request_diagnosis(work: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Ask the probed engine started with :func:`probe_env` ``(work)`` for
    :func:`diagnose` of its stores; wait up to ``timeout`` s for the answer."""
    request = work / "diag-request"
    result = request.with_suffix(".json")
    result.unlink(missing_ok=True)
    request.touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result.exists():
            return dict(json.loads(result.read_text()))
        time.sleep(0.2)
    return {"error": f"no answer from the engine in {timeout:g}s"}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
