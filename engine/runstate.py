"""The shape of a run's state (placeholder; typed below in item 2)."""

from __future__ import annotations

from typing import Any

RunState = dict[str, Any]
