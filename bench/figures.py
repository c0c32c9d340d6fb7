"""A figure the benchmark reports: its value, its target, and the table they make."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number; `at_least`/`at_most` make it a target, neither makes it a report."""

    key: str
    label: str
    value: float | None  # None: could not be measured here (the note says why)
    unit: str = ""
    at_least: float | None = None
    at_most: float | None = None
    note: str = ""

    @property
    def target(self) -> str:
        if self.at_least is not None:
            return f">= {_number(self.at_least)}{self.unit}"
        if self.at_most is not None:
            return f"<= {_number(self.at_most)}{self.unit}"
        return ""

    @property
    def passed(self) -> bool | None:
        """True or False against the target; None when there is no target or no value."""
        if self.value is None or (self.at_least is None and self.at_most is None):
            return None
        if self.at_least is not None and self.value < self.at_least:
            return False
        return not (self.at_most is not None and self.value > self.at_most)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "target": self.target or None,
            "passed": self.passed,
            "note": self.note or None,
        }


@dataclass(slots=True)
class Section:
    """What one part of the benchmark found: its figures, raw numbers per round, notes."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of nothing")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def table(figures: Sequence[Figure]) -> str:
    """The figures as a plain-text table: figure, value, target, pass/fail."""
    rows = [("figure", "value", "target", "result")]
    for f in figures:
        value = "n/a" if f.value is None else f"{_number(f.value)}{f.unit}"
        result = {True: "pass", False: "FAIL", None: "-" if f.value is not None else "n/a"}[f.passed]
        rows.append((f.label, value, f.target or "-", result))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 10):
        return f"{int(value)}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
