"""The /health probe's samples, judged only while the engine was meant to be up."""

from __future__ import annotations

from pathlib import Path

from tests.checkers.verdict import Check

Sample = tuple[int, float, int]  # start epoch ms, latency ms, status (0: no answer)


def read_samples(path: Path) -> list[Sample]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            start, took, code = line.split()
            out.append((int(start), float(took), int(code)))
        except ValueError:
            continue  # the probe was killed mid-line
    return out


def health_within(samples: list[Sample], up: list[tuple[int, int | None]], budget_ms: float
                  ) -> tuple[Check, Check]:
    """(answered 200 within ``budget_ms``, no 5xx) over the samples that started and
    ended inside an interval in ``up`` (from the engine's first answer after a start to
    its kill; ``None``: still up)."""
    fast, no_5xx = Check(f"/health within {budget_ms:g} ms"), Check("no 5xx from the API")
    for start, took, code in samples:
        since = next((start - lo for lo, hi in up
                      if lo <= start and (hi is None or start + took <= hi)), None)
        if since is None:
            continue
        fast.case(code == 200 and took <= budget_ms,
                  {"at_ms": start, "ms": took, "status": code, "ms_after_start": since})
        if code:
            no_5xx.case(code < 500, {"path": "/health", "at_ms": start, "status": code})
    return fast, no_5xx


def percentiles(samples: list[Sample]) -> dict[str, float]:
    """p50, p99 and max latency of the answered samples (ms)."""
    took = sorted(t for _, t, code in samples if code)
    if not took:
        return {}
    return {"p50": took[len(took) // 2], "p99": took[min(len(took) - 1, len(took) * 99 // 100)],
            "max": took[-1]}
