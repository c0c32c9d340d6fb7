"""What the simulator counts per provider, and the JSON-able report of it."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any


class Tally(enum.StrEnum):
    """One counter; every answer the simulator gives bumps exactly one besides REQUESTS."""

    REQUESTS = "requests"  # every request to a provider endpoint, before any check
    VOIDED = "voided"
    ALREADY_VOID = "already_void"
    REJECTED = "rejected"  # not voidable (paid, draft), bad request, forbidden, conflict
    NOT_FOUND = "not_found"
    AUTH_FAILED = "auth_failed"
    THROTTLED = "throttled"
    REDIRECTED = "redirected"  # redirect_to: answered 301 in front of everything else
    LOOKUPS = "lookups"  # Rapyd's GET invoice, answered by the app
    TOKENS = "tokens"  # an OAuth token endpoint's new access and refresh tokens
    IDEMPOTENT_REPLAYS = "idempotent_replays"
    FAULT_ERROR = "error"
    FAULT_TIMEOUT = "timeout"
    FAULT_RESET = "reset"


_FAULTS = (Tally.FAULT_ERROR, Tally.FAULT_TIMEOUT, Tally.FAULT_RESET)
_PLAIN = tuple(tally for tally in Tally if tally not in _FAULTS)


def report(counts: Counter[Tally]) -> dict[str, Any]:
    """One provider's counters as `{"requests": n, ..., "faults": {"error": n, ...}}`."""
    result: dict[str, Any] = {tally.value: counts[tally] for tally in _PLAIN}
    result["faults"] = {tally.value: counts[tally] for tally in _FAULTS}
    return result


def report_all(counts: Mapping[str, Counter[Tally]]) -> dict[str, Any]:
    """Every provider's report, keyed by provider type, plus `"totals"` over all of them."""
    result: dict[str, Any] = {name: report(tallies) for name, tallies in counts.items()}
    result["totals"] = report(_sum(counts.values()))
    return result


def _sum(counters: Iterable[Counter[Tally]]) -> Counter[Tally]:
    total: Counter[Tally] = Counter()
    for counter in counters:
        total.update(counter)
    return total
