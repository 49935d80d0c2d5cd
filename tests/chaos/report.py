"""The campaign's report: JSON for tools, Markdown for the README, a table for the
terminal (rich, already a dependency of the CLI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

INVARIANT_ORDER = [
    "every acked event has exactly its runs",
    "the app's functions stay registered",
    "recorded step never re-run",
    "no run stuck",
    "flow-control limit never exceeded",
    "timers never early",
    "one run per cron tick",
    "one debounced run per key",
    "replay hash equals live hash",
    "no 5xx from the API",
    "every request answered",
    "/health within 100 ms",
    "engine and workers never exit unless killed",
]


def _faults(row: dict[str, Any]) -> str:
    return ", ".join(f"{n} {k}" for k, n in row["faults"].items()) or "-"


def _checks(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["invariant"]: c for c in row["checks"]}


def invariants(rows: list[dict[str, Any]]) -> list[str]:
    seen = {c["invariant"] for r in rows for c in r["checks"]}
    return [i for i in INVARIANT_ORDER if i in seen] + sorted(seen - set(INVARIANT_ORDER))


def markdown(report: dict[str, Any]) -> str:
    """Two tables: the scenarios (load, faults, bad inputs, violations), and each
    invariant's violations per scenario (``violations/checked``; ``-`` not checked)."""
    rows = report["scenarios"]
    out = [f"Campaign of {report['started']} ({report['seconds']:.0f} s, seed "
           f"{report['seed']}, load {report['rate']:g} runs/s): "
           f"**{report['violations']} violations**.", "",
           "| scenario | s | runs | runs/s | faults injected | bad inputs | violations |",
           "|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        out.append(f"| {r['scenario']} | {r['seconds']:.0f} | {r['runs']} | "
                   f"{r['runs_per_s']:.1f} | {_faults(r)} | {r['bad_inputs']} | "
                   f"{r['violations']} |")
    out += ["", "| invariant | " + " | ".join(r["scenario"] for r in rows) + " |",
            "|---|" + "---:|" * len(rows)]
    for inv in invariants(rows):
        cells = []
        for r in rows:
            c = _checks(r).get(inv)
            cells.append("-" if c is None else f"{c['violations']}/{c['checked']}")
        out.append(f"| {inv} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def tables(report: dict[str, Any]) -> tuple[Table, Table]:
    """The scenarios (load, faults, bad inputs), and the invariants down by scenarios
    across (``violations/checked``), as in the Markdown."""
    rows = report["scenarios"]
    summary = Table(title=f"chaos campaign: {report['violations']} violations")
    for col in ("scenario", "s", "runs", "runs/s", "faults injected", "bad inputs",
                "violations"):
        summary.add_column(col, justify="left" if col in ("scenario", "faults injected")
                           else "right")
    for r in rows:
        summary.add_row(r["scenario"], f"{r['seconds']:.0f}", str(r["runs"]),
                        f"{r['runs_per_s']:.1f}", _faults(r), str(r["bad_inputs"]),
                        f"[red]{r['violations']}[/red]" if r["violations"] else "0")
    by_inv = Table(title="violations/checked per invariant")
    by_inv.add_column("invariant")
    for r in rows:
        by_inv.add_column(r["scenario"], justify="right")
    for inv in invariants(rows):
        cells = []
        for r in rows:
            c = _checks(r).get(inv)
            cells.append("-" if c is None else f"[red]{c['violations']}[/red]/{c['checked']}"
                         if c["violations"] else f"0/{c['checked']}")
        by_inv.add_row(inv, *cells)
    return summary, by_inv


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out``.json and ``out``.md; prints the table."""
    js, md = out.with_suffix(".json"), out.with_suffix(".md")
    js.write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    for r in report["scenarios"]:
        bad = [c for c in r["checks"] if c["violations"]]
        for c in bad:
            text += (f"\n{r['scenario']}: {c['invariant']}: {c['violations']} — e.g. "
                     f"{json.dumps(c['examples'][:2])[:600]}\n")
        for note in r["notes"]:
            text += f"\n{r['scenario']}: {note[:1500]}\n"
    md.write_text(text)
    console = Console(width=max(160, 30 + 20 * len(report["scenarios"])))
    for t in tables(report):
        console.print(t)
    return js, md
