"""SellApp: Bearer auth, `PATCH /api/v2/invoices/{id}/mark-voided`, optional `X-STORE`.

SellApp documents 401 and 403 apart: a key that is wrong or revoked is refused with 401, which
stops the lane as every provider's does; a 403 is a key that works being refused one invoice
or store (the X-STORE the row names), so only that item fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    describe,
    json_object,
    says_already_void,
    transient,
)
from batchvoid.providers.facts import ProviderSpec, Route, RowField


@dataclass(frozen=True, slots=True)
class SellApp(AdapterBase):
    base_url: str
    api_key: str = field(repr=False)
    store: str | None = None

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        # No idempotency header at SellApp; a repeated void answers "already voided".
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        if store := item.store or self.store:
            headers["X-STORE"] = store
        url = SPEC.void.url(self.base_url, invoice_id=item.invoice_id)
        return Request(SPEC.void.method, url, headers, secrets=(self.api_key,))

    def parse_void(self, item: Item, response: Response) -> Outcome:
        fields = json_object(response)
        if response.status == 200:
            if _status(fields) == "VOIDED":  # the usual answer: no reason to word
                return Outcome(OutcomeKind.VOIDED, "", 200)
            reason = f"answered 200 but the invoice status is {_status(fields)!r}"
            return Outcome(OutcomeKind.REJECTED, reason, 200)
        message = fields.get("message")
        reason = describe(response, message)
        if response.status in (400, 409, 422) and says_already_void(message):
            return Outcome(OutcomeKind.ALREADY_VOID, reason, response.status)
        if response.status == 403:  # the key works (a bad or revoked one is a 401), not for this invoice
            forbidden = _forbidden(reason, item.store or self.store)
            return Outcome(OutcomeKind.REJECTED, forbidden, 403, fields.get("request_id"))
        if (shared := transient(response, reason)) is not None:
            return shared
        return Outcome(OutcomeKind.REJECTED, reason, response.status, fields.get("request_id"))


def _forbidden(reason: str, store: str | None) -> str:
    """A 403's reason: SellApp authenticated the key, but it may not void this invoice."""
    sent = f"the store {store!r} (X-STORE)" if store else "the key's first store (no X-STORE sent)"
    return (
        f"{reason}; the key may not act on this invoice in {sent}: check the row's store (or the "
        "profile's) and that the key's account has that store, then --retry-failed"
    )


def _status(fields: dict[str, Any]) -> object:
    """The documented nesting: `status.status.status`."""
    outer = fields.get("status")
    inner = outer.get("status") if isinstance(outer, dict) else None
    return inner.get("status") if isinstance(inner, dict) else None


def _build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> SellApp:
    return SellApp(base_url, secrets["api_key"], options.get("store"))


SPEC = ProviderSpec(
    type="sellapp",
    title="SellApp",
    credentials={"api_key_env": "SELLAPP_API_KEY"},
    options={"store": "store slug sent as X-STORE (default: the key's first store)"},
    default_base_url="https://sell.app",
    void=Route("PATCH", "/api/v2/invoices/{invoice_id}/mark-voided"),
    documented_limits=(),
    example_limits=("5/1s",),
    limits_note="no rate limit is documented (the SDK honours Retry-After): conservative 5/s",
    row_fields=(RowField("store", "the store slug sent as X-STORE; default: the profile's store"),),
    build=_build,
)
