"""What flow control promises, computed from the flow test app's ledger (what really
executed), never from a counter the engine reports about itself."""

from __future__ import annotations

from pathlib import Path


def executions(ledger: Path, fn: str) -> list[tuple[str, str, str, int, int]]:
    """(run, step, key, start_ms, end_ms) of every step execution of ``fn`` that ended."""
    out = []
    for line in ledger.read_text().splitlines() if ledger.exists() else ():
        f, run, step, key, start, end = line.split()
        if f == fn:
            out.append((run, step, key, int(start), int(end)))
    return out


def max_overlap(spans: list[tuple[int, int]]) -> int:
    """The most spans open at one instant (an end at t closes before a start at t)."""
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, delta in points:
        now += delta
        most = max(most, now)
    return most


def most_in_window(times: list[int], window_ms: int) -> int:
    """The most of ``times`` that fall in any half-open window of ``window_ms``."""
    times = sorted(times)
    most = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_ms:
            lo += 1
        most = max(most, hi - lo + 1)
    return most
