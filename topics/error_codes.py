"""The ``code`` of an error on the wire: what kind of failure it is, for programs.

A run's or step's error is ``{"name", "message", "stack", "code"}``, as in Inngest:
``name`` is the exception's class (or the engine's name for its own failures),
``code`` says which rule ended it. Where Inngest has a code for the same case, the
value is Inngest's (lower-case, as its SDK sends them); the others are ours. Records
written before codes existed have none: :func:`code_of` gives them one from the name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# -- raised by user code ------------------------------------------------------------
# A step failed for good (retries exhausted) and the function did not catch its StepError.
STEP_ERRORED = "step_errored"
# sdk.NonRetriableError, from the function or one of its steps.
NON_RETRIABLE_ERROR = "non_retriable_error"
# sdk.RetryAfterError, after the last retry.
RETRY_AFTER_ERROR = "retry_after_error"
# Any other exception raised by the function body (Inngest says "unknown").
FUNCTION_ERRORED = "function_errored"

# -- rules the SDK enforces ---------------------------------------------------------
STEP_NESTED = "step_nested"                      # a step called inside another step
OUTPUT_UNSERIALIZABLE = "output_unserializable"  # output not JSON (or too deep)
OUTPUT_TOO_LARGE = "output_too_large"            # output over its byte limit
EVENT_INVALID = "event_invalid"                  # send_event with a bad event
INVOKE_DATA_INVALID = "invoke_data_invalid"      # invoke data not JSON
UNSUPPORTED_PARALLEL_STEP = "unsupported_parallel_step"
INTERRUPTED = "interrupted"                      # a new step ended with no outcome
OUTPUT_UNAVAILABLE = "output_unavailable"        # a large output could not be read back
SEND_EVENT_FAILED = "send_event_failed"          # send_event's events not acknowledged

# -- decided by the engine ----------------------------------------------------------
FUNCTION_NOT_FOUND = "function_not_found"
RUN_CANCELLED = "run_cancelled"
INVOKE_TIMEOUT = "invoke_timeout"
RATE_LIMITED = "rate_limited"
SINGLETON_SKIPPED = "singleton_skipped"
TASK_TOO_LARGE = "task_too_large"
RUN_STATE_TOO_LARGE = "run_state_too_large"

# The names the SDK and the engine give their own errors, and their codes.
_BY_NAME = {
    "NonRetriableError": NON_RETRIABLE_ERROR,
    "RetryAfterError": RETRY_AFTER_ERROR,
    "NestedStepError": STEP_NESTED,
    "OutputNotSerializable": OUTPUT_UNSERIALIZABLE,
    "OutputTooLarge": OUTPUT_TOO_LARGE,
    "EventError": EVENT_INVALID,
    "InvokeDataError": INVOKE_DATA_INVALID,
    "UnsupportedParallelStep": UNSUPPORTED_PARALLEL_STEP,
    "UnsupportedParallelWait": UNSUPPORTED_PARALLEL_STEP,
    "Interrupted": INTERRUPTED,
    "StepOutputUnavailable": OUTPUT_UNAVAILABLE,
    "SendError": SEND_EVENT_FAILED,
    "FunctionNotFound": FUNCTION_NOT_FOUND,
    "RunCancelled": RUN_CANCELLED,
    "InvokeTimeoutError": INVOKE_TIMEOUT,
    "RateLimited": RATE_LIMITED,
    "SingletonSkipped": SINGLETON_SKIPPED,
    "TaskTooLarge": TASK_TOO_LARGE,
    "RunStateTooLarge": RUN_STATE_TOO_LARGE,
}


def code_for_name(name: str, default: str = FUNCTION_ERRORED) -> str:
    """The code of an error the SDK or engine names ``name``, else ``default``."""
    return _BY_NAME.get(name, default)


def code_of(error: Mapping[str, Any], default: str = FUNCTION_ERRORED) -> str:
    """The code of a wire error: its own ``code``, else one from its name, else
    ``default``."""
    code = error.get("code")
    if isinstance(code, str) and code:
        return code
    return code_for_name(str(error.get("name") or ""), default)


def step_code(error: Mapping[str, Any]) -> str:
    """The code of a step's memoized error, as the function sees it in its StepError:
    an invoked child's plain failure (``function_errored``) is, for the parent, a step
    that errored; more specific codes (``non_retriable_error``, ``invoke_timeout``, …)
    are kept."""
    code = code_of(error, STEP_ERRORED)
    return STEP_ERRORED if code == FUNCTION_ERRORED else code


def coded(error: Any, default: str = FUNCTION_ERRORED) -> Any:
    """A wire error with its ``code`` set (a new dict; the given one is not changed),
    ``default`` if neither it nor its name has one; anything that is not an error map
    (None) is returned as it is."""
    if not isinstance(error, dict):
        return error
    return {**error, "code": code_of(error, default)}
