"""Trigger matching: event-name wildcards and CEL filter expressions.

Pure: no I/O and no clock. Expressions are compiled once and evaluated many times.

CEL here is cel-python's, which is strict about numeric types: an integer never equals
or compares with a double (``event.data.total == 5.0`` is an evaluation error when
``total`` is ``5``), and an evaluation error means "no match".
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import celpy

log = logging.getLogger(__name__)


class ExpressionError(ValueError):
    """A CEL expression that does not compile; the message names the expression."""


class _DropTranspilerNoise(logging.Filter):
    """cel-python's compiled runner logs every evaluation error (a missing field, say)
    at ERROR as "Internal error" before re-raising it. For event filters that is the
    normal "no match" path, so the record is dropped; the error still reaches us."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Internal error")


logging.getLogger("celpy.Transpiler").addFilter(_DropTranspilerNoise())

# The compiled runner (Python source generated from the AST) evaluates ~3-4x faster than
# the tree-walking interpreter, but it is not usable for every expression (it transpiles
# the identifier ``async`` into invalid Python, and fails outright if another module
# created cel-python's singleton parser with plain lark trees first), so each expression
# falls back to the interpreter when transpiling fails.
_COMPILED_ENV = celpy.Environment(runner_class=celpy.CompiledRunner)
_INTERPRETED_ENV = celpy.Environment(runner_class=celpy.InterpretedRunner)
# The compiled runner passes the activation through module globals of
# celpy.evaluation, so two threads evaluating at once would see each other's variables.
_COMPILED_LOCK = threading.Lock()


# ``async`` is a Python keyword: cel-python's compiled runner cannot name it (its
# interpreter can, ~3x slower), so the variable is renamed outside string literals.
_ASYNC = re.compile(r"""("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')|\basync\b""")


def rename_async(source: str) -> str:
    """``source`` with the identifier ``async`` renamed ``async_`` (strings untouched)."""
    return _ASYNC.sub(lambda m: m.group(1) or "async_", source)


class CompiledExpression:
    """A CEL expression compiled once; :meth:`evaluate` runs it against variables.

    Raises :class:`ExpressionError` at construction if ``source`` does not compile.
    """

    def __init__(self, source: str) -> None:
        if not isinstance(source, str) or not source.strip():
            raise ExpressionError(f"CEL expression {source!r} is empty")
        self.source = source
        try:
            ast = _COMPILED_ENV.compile(source)
        except celpy.CELParseError as exc:
            raise ExpressionError(f"CEL expression {source!r} does not compile:\n{exc}") from None
        try:
            self._runner = _COMPILED_ENV.program(ast)
            self.compiled = True
        except Exception as exc:  # transpiler limits, see above; the interpreter handles it
            log.debug("CEL expression %r falls back to the interpreter: %r", source, exc)
            try:
                self._runner = _INTERPRETED_ENV.program(_INTERPRETED_ENV.compile(source))
            except Exception as exc2:
                raise ExpressionError(
                    f"CEL expression {source!r} does not compile: {exc2}"
                ) from None
            self.compiled = False

    def evaluate(self, activation: Mapping[str, Any], *, converted: bool = False) -> Any:
        """Evaluate with ``activation`` mapping variable names to JSON-compatible values
        (or to CEL values already, with ``converted``).

        Returns a CEL value from ``celpy.celtypes`` (``BoolType`` and ``IntType`` are
        ``int`` subclasses, ``StringType`` a ``str``, ``MapType`` a ``dict``). Raises ``celpy.CELEvalError`` when
        evaluation fails (missing field, type mismatch, division by zero).
        """
        if converted:
            return self._run(activation)
        return self._run({name: to_cel(value) for name, value in activation.items()})

    def _run(self, context: Mapping[str, Any]) -> Any:
        if self.compiled:
            with _COMPILED_LOCK:
                return self._runner.evaluate(context)
        return self._runner.evaluate(context)

    def evaluate_bool(self, activation: Mapping[str, Any], *, converted: bool = False) -> bool:
        """True only when evaluation succeeds with the boolean ``true``; an error or a
        non-boolean result is False (logged at debug). ``converted`` says the
        activation's values are CEL values already (see :class:`PreparedEvent`)."""
        try:
            result = self.evaluate(activation, converted=converted)
        except Exception as exc:  # CELEvalError, or a conversion error on odd input
            log.debug("CEL expression %r: %s", self.source, exc)
            return False
        if isinstance(result, bool | celpy.celtypes.BoolType):
            return bool(result)
        log.debug("CEL expression %r gave a %s, not a bool", self.source,
                  type(result).__name__)
        return False

    def __repr__(self) -> str:
        return f"CompiledExpression({self.source!r})"


def to_json(value: Any) -> Any:
    """A CEL result as a plain JSON-compatible Python value (for keys and storage)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, celpy.celtypes.BoolType):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return str(value)


_new_str = str.__new__
_new_int = int.__new__
_new_float = float.__new__
_set_item = dict.__setitem__
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def to_cel(value: Any) -> Any:
    """A JSON-compatible value as CEL values: the same result as ``celpy.json_to_cel``,
    about 7x faster (30 us instead of 205 us for a 20-value event).

    ``json_to_cel`` spends most of its time in the ``celtypes`` constructors (``IntType``
    builds a range-checking decorator on every call), so the common types are built
    directly; anything unusual goes through ``json_to_cel`` itself.
    """
    t = type(value)
    if t is str:
        return _new_str(celpy.celtypes.StringType, value)
    if t is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return _new_int(celpy.celtypes.IntType, value)
        return celpy.json_to_cel(value)
    if t is float:
        return _new_float(celpy.celtypes.DoubleType, value)
    if t is bool:
        return celpy.celtypes.BoolType(value)
    if value is None:
        return None
    if t is dict:
        out = celpy.celtypes.MapType()
        for k, v in value.items():
            key = _new_str(celpy.celtypes.StringType, k) if type(k) is str else to_cel(k)
            _set_item(out, key, to_cel(v))
        return out
    if t is list:
        return celpy.celtypes.ListType([to_cel(v) for v in value])
    return celpy.json_to_cel(value)


def compile_expression(source: str) -> CompiledExpression:
    """Compile a CEL expression; raises :class:`ExpressionError` if it does not compile."""
    return CompiledExpression(source)


@lru_cache(maxsize=4096)
def _name_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


class PreparedEvent:
    """An event as trigger matching sees it, converted to CEL at most once however many
    triggers test it (the conversion is ~25 us; the router tests every function)."""

    __slots__ = ("_cel", "fields")

    def __init__(self, event: Mapping[str, Any]) -> None:
        # Only the four event fields are exposed, so an expression sees the same
        # variable whether the dict came from the wire or from a record object.
        self.fields = {k: event.get(k) for k in ("name", "data", "id", "ts")}
        self._cel: Any = None

    def cel(self) -> Any:
        if self._cel is None:
            self._cel = to_cel(self.fields)
        return self._cel


class TriggerMatcher:
    """Does an event start a function? Its name must match ``event`` (``*`` matches any
    run of characters, everything else is literal) and ``expression`` (CEL over the
    variable ``event``), when given, must evaluate to ``true``."""

    def __init__(self, event: str, expression: str | None = None) -> None:
        if not isinstance(event, str) or not event:
            raise ExpressionError(f"trigger event name pattern {event!r} is empty")
        self.event = event
        self.expression = expression
        self._any_name = event == "*"
        self._literal = None if "*" in event else event
        self._pattern = _name_pattern(event)
        self._expr = compile_expression(expression) if expression else None

    def name_matches(self, name: str) -> bool:
        """Whether an event name matches the trigger's name pattern."""
        if self._any_name:
            return True
        if self._literal is not None:
            return name == self._literal
        return self._pattern.fullmatch(name) is not None

    def matches(self, event: Mapping[str, Any] | PreparedEvent) -> bool:
        """Whether ``event`` (a dict with name, data, id, ts, or one prepared for
        several matchers) triggers; never raises."""
        prepared = event if isinstance(event, PreparedEvent) else PreparedEvent(event)
        name = prepared.fields["name"]
        if not isinstance(name, str) or not self.name_matches(name):
            return False
        if self._expr is None:
            return True
        try:
            cel_event = prepared.cel()
        except Exception as exc:  # e.g. an integer beyond int64: no match, as before
            log.debug("event not convertible to CEL: %s", exc)
            return False
        return self._expr.evaluate_bool({"event": cel_event}, converted=True)

    def __repr__(self) -> str:
        return f"TriggerMatcher({self.event!r}, {self.expression!r})"


@lru_cache(maxsize=1024)
def compiled(source: str) -> CompiledExpression:
    """The compiled form of a wait condition, ``async`` renamed (see :func:`rename_async`),
    from a cache: the matcher checks the same few conditions against every event.
    Raises :class:`ExpressionError` (not cached) if it does not compile."""
    return CompiledExpression(rename_async(source))
