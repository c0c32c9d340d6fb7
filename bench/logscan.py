"""Reads a batchvoid JSON-lines log for when things happened: voids and 429s, by provider."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(slots=True)
class Timeline:
    """Epoch seconds of each provider's `void.succeeded` events and of every throttled attempt."""

    voided: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    throttled: list[float] = field(default_factory=list)
    first_attempt: float | None = None


def read(path: Path) -> Timeline:
    timeline = Timeline()
    with path.open(encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            name = event.get("event")
            if not name or not name.startswith("void."):
                continue
            at = _epoch(event["timestamp"])  # each void.* line is one answered request
            if timeline.first_attempt is None or at < timeline.first_attempt:
                timeline.first_attempt = at
            if name == "void.succeeded":
                timeline.voided[event["provider"]].append(at)
            elif event.get("outcome") == "throttled":
                timeline.throttled.append(at)
    for times in timeline.voided.values():
        times.sort()
    timeline.throttled.sort()
    return timeline


def rate(times: Sequence[float]) -> float:
    """Events per second between the first and the last of `times` (sorted)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def _epoch(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()
