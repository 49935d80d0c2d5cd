"""The result of one invariant check: cases looked at, violations, a few examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXAMPLES = 5


@dataclass
class Check:
    """One invariant over one scenario. ``examples`` keeps the first few violations (as
    plain JSON-able values) so a report can be read without re-running the campaign."""

    invariant: str
    checked: int = 0
    violations: int = 0
    examples: list[Any] = field(default_factory=list)

    def case(self, ok: bool, example: Any = None) -> None:
        """Count one case; when not ``ok``, one violation (keeping ``example``)."""
        self.checked += 1
        if not ok:
            self.violation(example)

    def violation(self, example: Any = None) -> None:
        """Count a violation that is not tied to a counted case (e.g. an engine exit)."""
        self.violations += 1
        if example is not None and len(self.examples) < EXAMPLES:
            self.examples.append(example)

    def merge(self, other: Check) -> Check:
        """This check with ``other``'s counts and examples added (same invariant)."""
        self.checked += other.checked
        self.violations += other.violations
        room = EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[:max(room, 0)])
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "checked": self.checked,
                "violations": self.violations, "examples": self.examples}
