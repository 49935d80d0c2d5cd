"""When each worker took task partitions over, read from its log (``-v``): the window in
which a step still in flight on the previous owner may run again on the new one.

A worker that takes a partition over reads, before it runs anything, which of the
uncommitted tasks are finished (sdk/_handover.py). A step whose outcome was recorded
before that read began is found; one still executing on the old owner then is not, and
runs again on the new owner even if the old owner records it a moment later (README,
Guarantees: a takeover during a rebalance). The read's start is taken from the first
handover line (its time less the milliseconds it reports), else the worker's start or
previous revocation; it ends when the worker logs ``assigned``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ [\w.]+: (.*)$")
_WORKER = re.compile(r"worker [^:\s]+:(\d+):\w+: (connecting|revoked|lost|assigned)")
# The first line a handover logs, after reading the tail: "... (735 ms)".
_SCANNED = re.compile(r"^handover: \d+ of \d+ uncommitted task.* \((\d+) ms\)$")


def log_ms(stamp: str, millis: str) -> int:
    """A logging timestamp (local time, as logging writes it) in epoch ms."""
    return int(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) * 1000) + int(millis)


def takeovers(logs: Iterable[Path]) -> dict[int, list[tuple[int, int]]]:
    """pid -> [(began_ms, assigned_ms)] for every assignment in each worker's log."""
    out: dict[int, list[tuple[int, int]]] = {}
    for path in logs:
        began: int | None = None
        for line in path.read_text(errors="replace").splitlines():
            m = _LINE.match(line)
            if m is None:
                continue
            at = log_ms(m.group(1), m.group(2))
            scanned = _SCANNED.match(m.group(3))
            if scanned is not None:
                # The read began this long before the line: narrower than the revocation.
                began = max(began or 0, at - int(scanned.group(1)))
                continue
            w = _WORKER.search(m.group(3))
            if w is None:
                continue
            pid, what = int(w.group(1)), w.group(2)
            if what == "assigned":
                out.setdefault(pid, []).append((began if began is not None else at, at))
            else:
                began = at
    return out


def in_takeover(taken: dict[int, list[tuple[int, int]]], pid: int, start_ms: int,
                recorded_ms: int) -> bool:
    """Whether ``pid``'s execution starting at ``start_ms`` ran a task it had taken over
    in a read that began before the step was recorded (so the read could not know)."""
    last = [t for t in taken.get(pid, []) if t[1] <= start_ms]
    return bool(last) and max(last, key=lambda t: t[1])[0] <= recorded_ms
