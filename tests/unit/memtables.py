"""The in-memory tables the pure tests fold into (they live in :mod:`engine.store.memory`)."""

from engine.store.memory import MemTables

__all__ = ["MemTables"]
