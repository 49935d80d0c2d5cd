"""A partition database killed mid-write reopens quickly: its write-ahead log, which
RocksDB replays on open while rocksdict holds the GIL (the engine's API waits), stays
a few MB however much was written since the last flush."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from engine.store.partition import MEMTABLE_FLUSH_MB, MEMTABLES, PartitionStore

WRITTEN_MB = 32


def test_the_log_a_killed_store_leaves_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "runs-0"
    # Written by a process that then dies without closing the database, as kill -9 does.
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from pathlib import Path
        from rocksdict import WriteBatch
        from engine.store.partition import PartitionStore
        store = PartitionStore(Path({str(path)!r}))
        for i in range({WRITTEN_MB}):
            batch = WriteBatch(raw_mode=True)
            for j in range(1024):
                batch.put(b"r/%d-%d" % (i, j), os.urandom(1024))
            store.write(batch)
        os._exit(0)
    """)], check=True, cwd=Path(__file__).parents[3])
    log_mb = sum(f.stat().st_size for f in path.glob("*.log")) / (1 << 20)
    # At most the memtables not flushed yet (RocksDB's default was one of 64 MB).
    assert log_mb <= MEMTABLES * MEMTABLE_FLUSH_MB, f"{log_mb:.1f} MB of log to replay"
    store = PartitionStore(path)
    try:
        assert sum(1 for _ in store.iterate(b"r/")) == WRITTEN_MB * 1024  # nothing lost
    finally:
        store.close()
