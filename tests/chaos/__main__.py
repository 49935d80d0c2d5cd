"""``python -m tests.chaos [--duration 15m] [--only a,b] [--rate 40] [--seed N]``: the
fault campaign (``make chaos``). One dev broker for the whole campaign; each scenario its
own topics, engine and workers on it. Writes chaos-report.json and chaos-report.md, prints
the table, and exits 1 if any invariant was violated."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from tests.chaos.catalog import SCENARIOS, describe
from tests.chaos.report import write
from tests.chaos.scenarios import Options, Result, as_json
from tests.chaos.stack import ChaosStack

# Per scenario, besides its fault phase: start, drain, replay (measured: 16-30 s, and the
# last fault may end up to one interval after the phase).
OVERHEAD_S = 40


def duration(text: str) -> float:
    """``90``, ``90s``, ``3m`` or ``1h`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 3m)") from None


def scenario_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {unknown or text!r}; known: {', '.join(SCENARIOS)}")
    return names


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--duration", type=duration, default=duration("15m"),
                   help="the whole campaign's time (15m); each scenario gets its share")
    p.add_argument("--only", type=scenario_list, default=list(SCENARIOS),
                   help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    p.add_argument("--rate", type=float, default=40, help="load, runs/s (40)")
    p.add_argument("--seed", type=int, default=None, help="random seed (printed)")
    p.add_argument("--out", type=Path, default=Path("chaos-report"),
                   help="report path without suffix (chaos-report)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where logs and state go (a new temp dir)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = p.parse_args(argv)
    if args.duration < 30 * len(args.only):
        p.error(f"--duration {args.duration:.0f}s is too short for {len(args.only)} "
                f"scenarios (at least 30 s each)")
    if args.rate <= 0:
        p.error("--rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name in SCENARIOS:
            print(f"{name}: {describe(name)}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="stepstream-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    share = args.duration / len(args.only)
    started, began = datetime.datetime.now(datetime.UTC), time.monotonic()
    print(f"chaos: {len(args.only)} scenarios, {args.duration:.0f} s, seed {seed}, "
          f"logs in {work}", flush=True)
    from engine.cli.devbroker import DevBroker

    results: list[dict[str, Any]] = []
    external = os.environ.get("STEPSTREAM_TEST_BROKERS")
    with DevBroker() if not external else _External(external) as dev:
        for i, name in enumerate(args.only):
            left = args.duration - (time.monotonic() - began)
            remaining = len(args.only) - i
            budget = min(share, left / remaining) if remaining else share
            opts = Options(seconds=max(budget - OVERHEAD_S, 10), rate=args.rate,
                           drain_s=max(min(120, budget), 45),
                           rng=random.Random(f"{seed}-{name}"))
            print(f"-- {name}: {opts.seconds:.0f} s of faults", flush=True)
            results.append(run_one(name, dev.address, work / name, opts))
            row = results[-1]
            broken = [f"{c['invariant']} ({c['violations']})" for c in row["checks"]
                      if c["violations"]]
            print(f"   {row['runs_per_s']} runs/s, {row['violations']} violations"
                  + (": " + ", ".join(broken) if broken else ""), flush=True)
    report = {"started": started.isoformat(timespec="seconds"),
              "seconds": time.monotonic() - began, "seed": seed, "rate": args.rate,
              "violations": sum(r["violations"] for r in results), "scenarios": results,
              "workdir": str(work)}
    js, md = write(report, args.out)
    print(f"report: {js} {md}")
    return 1 if report["violations"] else 0


def run_one(name: str, broker: str, tmp: Path, opts: Options) -> dict[str, Any]:
    began = time.monotonic()
    stack = ChaosStack(broker, tmp)
    try:
        result = SCENARIOS[name](stack, opts)
    except Exception as exc:
        result = Result(name, faults=dict(stack.faults),
                        checks=[stack.no_5xx, stack.health, stack.exits])
        from tests.checkers.verdict import Check
        broke = Check("scenario completed")
        broke.violation({"error": repr(exc)[:500],
                         "where": traceback.format_exc().splitlines()[-6:]})
        result.checks.append(broke)
        result.notes.append(f"logs: {tmp}")
    finally:
        stack.close()
    result.seconds = time.monotonic() - began
    return as_json(result)


class _External:
    """A broker given by STEPSTREAM_TEST_BROKERS (as for the integration tests)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def __enter__(self) -> _External:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
