"""Typed outputs: ``step.run(..., output_type=Model)`` and
``create_function(output_type=Model)``, with pydantic, as Inngest's ``PydanticSerializer``.

The value is stored as its JSON form (``TypeAdapter.dump_python(mode="json")``), so the
records on Kafka stay plain JSON that any reader (the API, the dashboard, a re-run)
understands; a replay turns the memoized JSON back into the type
(``TypeAdapter.validate_python``: ``Model.model_validate`` for a model). pydantic is an
optional dependency (``pip install 'stepstream[pydantic]'``), imported only here and
only when a type is given.
"""

from __future__ import annotations

import importlib
from typing import Any

from sdk._errors import ConfigError, NonRetriableError

INSTALL_HINT = "pip install 'stepstream[pydantic]'"


class OutputTypeError(NonRetriableError):
    """A value that does not fit its declared ``output_type``: retrying the same code
    returns the same value, so it fails without retries."""


class OutputType:
    """Converts values of one type to JSON and back; make one with :func:`output_type_for`."""

    def __init__(self, adapter: Any, what: str, type_name: str) -> None:
        self._adapter = adapter
        self._what = what
        self.type_name = type_name

    def dump(self, value: Any) -> Any:
        """``value`` (validated against the type first) as JSON-compatible data; raises
        :class:`OutputTypeError` if it does not fit."""
        try:
            return self._adapter.dump_python(self._adapter.validate_python(value), mode="json")
        except Exception as exc:  # pydantic's ValidationError / PydanticSerializationError
            raise OutputTypeError(f"{self._what} returned a value that is not a valid "
                                  f"{self.type_name}: {exc}") from None

    def load(self, data: Any) -> Any:
        """Memoized JSON back as the type. A stored value that no longer fits (the type
        changed since it was stored) raises pydantic's ``ValidationError`` here."""
        return self._adapter.validate_python(data)


def _pydantic(what: str, error: type[Exception]) -> Any:
    try:
        return importlib.import_module("pydantic")
    except ImportError:
        raise error(f"{what}: output_type needs pydantic, which is not installed "
                    f"({INSTALL_HINT})") from None


def output_type_for(output_type: Any, output_serializer: Any, what: str, *,
                    error: type[Exception] = ConfigError) -> OutputType | None:
    """The converter for ``output_type`` (or ``output_serializer``, Inngest's newer name
    for it): a pydantic model class, a ``pydantic.TypeAdapter``, or any type pydantic
    can adapt (``list[Model]``, ``Model | None``). None if neither is given. A missing
    pydantic or a type it cannot handle raises ``error`` naming ``what``."""
    if output_type is not None and output_serializer is not None:
        raise TypeError(f"{what}: give output_type or output_serializer, not both")
    given = output_type if output_type is not None else output_serializer
    if given is None:
        return None
    pydantic = _pydantic(what, error)
    if isinstance(given, pydantic.TypeAdapter):
        return OutputType(given, what, repr(given))
    try:
        adapter = _adapter(pydantic, given)
    except Exception as exc:  # PydanticSchemaGenerationError, or not a type at all
        raise error(f"{what}: output_type {given!r} is not a type pydantic can "
                    f"validate: {exc}") from None
    return OutputType(adapter, what, getattr(given, "__name__", repr(given)))


# Building a TypeAdapter walks the type's schema; steps name the same few types on every
# execution, so keep the adapters of hashable types.
_ADAPTERS: dict[Any, Any] = {}
_MAX_ADAPTERS = 1024


def _adapter(pydantic: Any, typ: Any) -> Any:
    try:
        cached = _ADAPTERS.get(typ)
    except TypeError:  # unhashable: build it each time
        return pydantic.TypeAdapter(typ)
    if cached is None:
        cached = pydantic.TypeAdapter(typ)
        if len(_ADAPTERS) >= _MAX_ADAPTERS:
            _ADAPTERS.clear()
        _ADAPTERS[typ] = cached
    return cached
