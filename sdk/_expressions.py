"""Checks of the expressions users write: CEL (parsed only, the engine evaluates) and
event field paths for ``match``."""

from __future__ import annotations

import functools
import re
import threading

import celpy

# The parser only: the SDK never evaluates CEL. cel-python keeps one parser per process
# whose tree class is fixed by whoever creates it first; this asks for the compiled
# runner's tree class, as the engine does, so a worker and an engine in one process
# (tests, benchmarks) never leave the engine a parser its compiled runner cannot use.
_ENV: celpy.Environment | None = None
_LOCK = threading.Lock()

# A field path: identifiers separated by dots ("data.invoice_id").
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def cel_problem(source: object) -> str | None:
    """Why ``source`` is not a CEL expression that parses, or None if it is one.

    ``async`` (the awaited event in ``if_exp``) is a Python keyword but a plain
    identifier to CEL, and parses like any other.
    """
    if not isinstance(source, str):
        return f"must be a string, got {type(source).__name__}"
    if not source.strip():
        return "is empty"
    return _parse_problem(source)


@functools.lru_cache(maxsize=1024)
def _parse_problem(source: str) -> str | None:
    # Cached: wait_for_event checks its if_exp on every execution of the function.
    global _ENV
    with _LOCK:  # the shared lark parser keeps per-call state
        if _ENV is None:
            _ENV = celpy.Environment(runner_class=celpy.CompiledRunner)
        try:
            _ENV.compile(source)
        except Exception as exc:  # CELParseError, or lark's own errors on odd input
            detail = " ".join(str(exc).split()) or type(exc).__name__
            return f"does not parse as CEL: {detail}"
    return None


def match_path(value: object) -> str:
    """The event field path of a ``match`` argument: ``"data.invoice_id"``.

    A leading ``event.`` or ``async.`` is accepted and stripped (Inngest writes both).
    Raises ValueError (TypeError for a non-string) naming the problem.
    """
    if not isinstance(value, str):
        raise TypeError(f"match must be a field path string like 'data.id', "
                        f"got {type(value).__name__}")
    path = value.strip()
    for prefix in ("event.", "async."):
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    if not _PATH.fullmatch(path):
        raise ValueError(f"match {value!r} is not a field path like 'data.invoice_id' "
                         "(dot-separated identifiers)")
    return path
