"""Turning step and function results into wire :class:`~topics.records.Outcome` records."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from sdk._durations import retry_at_ms
from sdk._errors import NonRetriableError, RetryAfterError, StepError, is_quiet
from sdk._serializer import OutputType, OutputTypeError
from topics import error_codes, records
from topics.codec import PayloadError, check_payload, encode
from topics.settings import Settings

# An error report is for people: cap it so a runaway message or stack cannot push the
# whole OutcomesReported record over the record size limit.
MAX_MESSAGE_CHARS = 16_384
MAX_STACK_CHARS = 32_768

worker_log = logging.getLogger("stepstream.worker")


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 40] + f"... [{len(text) - limit + 40} characters cut]"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the report
        return f"<{type(exc).__name__}: str() failed>"


def error_of(exc: BaseException, plain_code: str = error_codes.FUNCTION_ERRORED
             ) -> dict[str, Any]:
    """The wire form of an exception: ``{"name", "message", "stack", "code"}``.

    The code (:mod:`topics.error_codes`) is Inngest's for its error classes, and
    ``plain_code`` for any other exception: ``step_errored`` in a step,
    ``function_errored`` in the function body.
    """
    if isinstance(exc, StepError):
        # An uncaught step error fails the run with the step's own error, as Inngest
        # does: the step's name, message, stack and code say what went wrong and where.
        stack = exc.stack or "".join(traceback.format_exception(exc))
        return {"name": exc.name, "message": _clip(exc.message, MAX_MESSAGE_CHARS),
                "stack": _clip(stack, MAX_STACK_CHARS), "code": exc.code}
    if isinstance(exc, OutputTypeError):
        code = error_codes.OUTPUT_UNSERIALIZABLE
    elif isinstance(exc, NonRetriableError):
        code = error_codes.NON_RETRIABLE_ERROR
    elif isinstance(exc, RetryAfterError):
        code = error_codes.RETRY_AFTER_ERROR
    else:
        code = plain_code
    return {
        "name": type(exc).__name__,
        "message": _clip(_safe_str(exc), MAX_MESSAGE_CHARS),
        "stack": _clip("".join(traceback.format_exception(exc)), MAX_STACK_CHARS),
        "code": code,
    }


def error_named(name: str, message: str) -> dict[str, Any]:
    """An error raised by the SDK itself, with no Python stack worth keeping; its code
    comes from its name (:func:`topics.error_codes.code_for_name`)."""
    return {"name": name, "message": _clip(message, MAX_MESSAGE_CHARS), "stack": "",
            "code": error_codes.code_for_name(name)}


def retry_policy(exc: BaseException, now_ms: int) -> tuple[bool, int | None]:
    """``(retriable, retry_after_ms)`` for an exception raised by user code."""
    if isinstance(exc, NonRetriableError | StepError):
        return False, None
    if isinstance(exc, RetryAfterError):
        try:
            return True, retry_at_ms(exc.retry_after, now_ms)
        except (TypeError, ValueError, OverflowError):
            return True, None
    return True, None


def log_step_failure(run_id: str, step_id: str, exc: BaseException) -> None:
    """One INFO line on the worker's logger for a failed step attempt, unless the
    exception asked for none (``quiet=True``, as in Inngest)."""
    if not is_quiet(exc):
        worker_log.info("run %s: step %r raised %s: %s", run_id, step_id,
                        type(exc).__name__, _safe_str(exc))


def step_failed(step_id: str, name: str, exc: BaseException, *, now_ms: int,
                started_at: int | None = None) -> records.Outcome:
    retriable, retry_after = retry_policy(exc, now_ms)
    return records.Outcome(
        op=records.STEP_FAILED, step_id=step_id, name=name,
        error=error_of(exc, error_codes.STEP_ERRORED),
        retriable=retriable, retry_after_ms=retry_after, started_at=started_at, ended_at=now_ms,
    )


def output_error(output: Any, what: str, settings: Settings) -> dict[str, Any] | None:
    """Why ``output`` cannot be stored, as the run's error, or None if it can:
    ``OutputNotSerializable`` (not JSON-compatible, too deep) or ``OutputTooLarge``."""
    try:
        size = check_payload(output, what=what, max_depth=settings.max_depth)
    except PayloadError as exc:
        return error_named("OutputNotSerializable", str(exc))
    limit = settings.max_step_output_bytes
    if size > limit:
        return error_named("OutputTooLarge",
                           f"{what} is {size} bytes, over the {limit}-byte limit "
                           "(STEPSTREAM_MAX_STEP_OUTPUT_BYTES)")
    return None


def step_completed(step_id: str, name: str, output: Any, settings: Settings, *,
                   started_at: int, ended_at: int) -> records.Outcome:
    """A completed step, or a non-retriable failure if its output cannot be stored."""
    error = output_error(output, f"step {step_id!r} output", settings)
    if error is not None:
        return records.Outcome(
            op=records.STEP_FAILED, step_id=step_id, name=name, error=error, retriable=False,
            started_at=started_at, ended_at=ended_at,
        )
    return records.Outcome(op=records.STEP_COMPLETED, step_id=step_id, name=name,
                           output=output, started_at=started_at, ended_at=ended_at)


def function_completed(fn_id: str, output: Any, settings: Settings,
                       output_type: OutputType | None = None) -> records.Outcome:
    """The function's completion with ``output`` (converted to JSON by ``output_type``
    if given), or its non-retriable failure if that output cannot be stored."""
    if output_type is not None:
        try:
            output = output_type.dump(output)
        except OutputTypeError as exc:
            return records.Outcome(op=records.FUNCTION_FAILED, error=error_of(exc),
                                   retriable=False)
    error = output_error(output, f"function {fn_id!r} output", settings)
    if error is not None:
        return records.Outcome(op=records.FUNCTION_FAILED, error=error, retriable=False)
    return records.Outcome(op=records.FUNCTION_COMPLETED, output=output)


def function_failed(exc: BaseException, *, now_ms: int) -> records.Outcome:
    retriable, retry_after = retry_policy(exc, now_ms)
    return records.Outcome(op=records.FUNCTION_FAILED, error=error_of(exc),
                           retriable=retriable, retry_after_ms=retry_after)


def fit_report(report: records.OutcomesReported, max_bytes: int) -> records.OutcomesReported:
    """Make ``report`` fit in one record.

    Each step output is within its own limit, but many parallel steps together can
    exceed the record limit. Then the largest outputs are turned into non-retriable
    failures (re-running them would produce the same oversized report) until it fits.
    """
    if len(encode(report)) <= max_bytes:
        return report
    sized = sorted(
        ((len(encode(records.OutcomesReported(report.run_id, 0, [o], "", 0))), i)
         for i, o in enumerate(report.outcomes) if o.op == records.STEP_COMPLETED),
        reverse=True,
    )
    outcomes = list(report.outcomes)
    for _, i in sized:
        o = outcomes[i]
        outcomes[i] = records.Outcome(
            op=records.STEP_FAILED, step_id=o.step_id, name=o.name, retriable=False,
            error=error_named(
                "OutputTooLarge",
                f"step {o.step_id!r} output does not fit in one report together with the "
                f"other steps run in parallel (record limit {max_bytes} bytes)",
            ),
            started_at=o.started_at, ended_at=o.ended_at,
        )
        candidate = records.OutcomesReported(report.run_id, report.task_seq, outcomes,
                                             report.worker, report.ts,
                                             progress=report.progress)
        if len(encode(candidate)) <= max_bytes:
            return candidate
    return records.OutcomesReported(report.run_id, report.task_seq, outcomes, report.worker,
                                    report.ts, progress=report.progress)
