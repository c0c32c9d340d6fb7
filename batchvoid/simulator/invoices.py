"""The simulated invoices of every provider, read from their ids until they change.

Ids beginning `paid` are paid, `void` already void, `missing` do not exist, `draft` are drafts
where the provider has drafts; anything else is open until voided. Nothing persists.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable

InvoiceKey = tuple[str, str]  # (provider type, invoice id)


class InvoiceState(enum.StrEnum):
    """Where a simulated invoice stands, in provider-neutral words."""

    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    DRAFT = "draft"
    MISSING = "missing"


def initial_state(invoice_id: str, *, has_drafts: bool) -> InvoiceState:
    """The state an invoice has before anyone voids it, read from its id."""
    if invoice_id.startswith("paid"):
        return InvoiceState.PAID
    if invoice_id.startswith("void"):
        return InvoiceState.VOID
    if invoice_id.startswith("missing"):
        return InvoiceState.MISSING
    if has_drafts and invoice_id.startswith("draft"):
        return InvoiceState.DRAFT
    return InvoiceState.OPEN


class InvoiceBook:
    """Every provider's invoices, and how often the void logic saw and applied each."""

    __slots__ = ("_has_drafts", "_states", "void_requests", "voids_applied")

    def __init__(self, providers_with_drafts: Iterable[str]) -> None:
        self._has_drafts = frozenset(providers_with_drafts)
        self._states: dict[InvoiceKey, InvoiceState] = {}
        self.void_requests: Counter[InvoiceKey] = Counter()
        self.voids_applied: Counter[InvoiceKey] = Counter()

    def state(self, provider_type: str, invoice_id: str) -> InvoiceState:
        """The invoice's current state (read-only: does not create it)."""
        state = self._states.get((provider_type, invoice_id))
        if state is None:
            state = initial_state(invoice_id, has_drafts=provider_type in self._has_drafts)
        return state

    def void(self, provider_type: str, invoice_id: str) -> InvoiceState:
        """Void the invoice if it is open; returns the state it was in before."""
        key = (provider_type, invoice_id)
        self.void_requests[key] += 1
        before = self._states.get(key)
        if before is None:
            before = initial_state(invoice_id, has_drafts=provider_type in self._has_drafts)
        if before is InvoiceState.OPEN:
            self._states[key] = InvoiceState.VOID
            self.voids_applied[key] += 1
        return before

    def clear(self) -> None:
        """Forget every invoice and count (in place: callers may hold the counters)."""
        self._states.clear()
        self.void_requests.clear()
        self.voids_applied.clear()
