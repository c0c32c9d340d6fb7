"""Lago: Bearer auth, a regional (US, EU) or self-hosted base URL, a plain void with no body,
and its documented 405 `not_voidable`, confirmed by a read since a draft answers it too."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    describe,
    header,
    json_object,
    maybe_already_void,
    settled,
    string,
    transient,
)
from batchvoid.providers.facts import ProviderSpec, Route


@dataclass(frozen=True, slots=True)
class Lago(AdapterBase):
    base_url: str
    api_key: str = field(repr=False)

    def _request(self, route: Route, item: Item) -> Request:
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        url = route.url(self.base_url, invoice_id=item.invoice_id)
        return Request(route.method, url, headers, None, secrets=(self.api_key,))

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        # No body: a plain void. `generate_credit_note` would force the void of a paid invoice.
        # Lago has no idempotency header; a repeated void answers 405 not_voidable.
        return self._request(SPEC.void, item)

    def parse_void(self, item: Item, response: Response) -> Outcome:
        fields = json_object(response)
        if response.status == 200:
            invoice = _invoice(fields)
            if invoice.get("status") == "voided":  # the usual answer: no reason to word
                return Outcome(OutcomeKind.VOIDED, "", 200, string(invoice.get("lago_id")))
            reason = f"answered 200 but the invoice status is {invoice.get('status')!r}"
            return Outcome(OutcomeKind.REJECTED, reason, 200)
        code, error = fields.get("code"), fields.get("error")
        reason = describe(response, f"{code}: {error}" if code and error else code or error)
        if isinstance(details := fields.get("error_details"), dict) and details:
            reason += f" ({_details(details)})"
        if response.status == 401:  # an organization and its keys live in one region only
            reason += (
                " (a Lago key works only in its organization's region: check region or base_url too; "
                f"here {self.base_url})"
            )
        if (shared := transient(response, reason)) is not None:
            return _reset(response, shared)
        if response.status == 404 and code == "invoice_not_found" and not _UUID.fullmatch(item.invoice_id):
            reason += ": Lago's invoice ids are UUIDs (its lago_id), not invoice numbers"
        if response.status == 405 and code == "not_voidable":
            # Lago's answer to a second void, and to a draft's (any state but finalized).
            return maybe_already_void(SPEC, response, reason)
        return Outcome(OutcomeKind.REJECTED, reason, response.status)

    def lookup_request(self, item: Item) -> Request | None:
        return self._request(_LOOKUP, item)

    def parse_lookup(self, item: Item, response: Response, rejected: Outcome) -> Outcome:
        fields = json_object(response)
        if response.status == 200:
            invoice = _invoice(fields)
            status, paid = invoice.get("status"), invoice.get("payment_status")
            if status == "finalized" and isinstance(paid, str):  # a paid invoice is still finalized
                status = f"{status}, payment_status: {paid}"
            return settled(SPEC, rejected, status)
        reason = describe(response, fields.get("code") or fields.get("error"))
        shared = transient(response, f"status lookup: {reason}")
        return rejected if shared is None else _reset(response, shared)


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _reset(response: Response, outcome: Outcome) -> Outcome:
    """A 429 without Retry-After waits for Lago's documented `X-RateLimit-Reset` (seconds)."""
    if outcome.kind is not OutcomeKind.THROTTLED or outcome.retry_after is not None:
        return outcome
    value = (header(response.headers, "X-RateLimit-Reset") or "").strip()
    return replace(outcome, retry_after=float(value)) if value.isdigit() else outcome


def _details(details: dict[str, Any]) -> str:
    return "; ".join(f"{name}: {value}" for name, value in list(details.items())[:5])


def _invoice(fields: dict[str, Any]) -> dict[str, Any]:
    invoice = fields.get("invoice")
    return invoice if isinstance(invoice, dict) else {}


def _build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> Lago:
    return Lago(base_url, secrets["api_key"])


REGIONS = {"us": "https://api.getlago.com", "eu": "https://api.eu.getlago.com"}

SPEC = ProviderSpec(
    type="lago",
    title="Lago",
    credentials={"api_key_env": "LAGO_API_KEY"},
    options={},
    default_base_url=REGIONS["us"],
    regions=REGIONS,
    api_prefix="/api/v1",
    void=Route("POST", "/api/v1/invoices/{invoice_id}/void"),
    lookup=Route("GET", "/api/v1/invoices/{invoice_id}"),
    void_status="voided",
    documented_limits=("50/1s",),
    example_limits=("25/1s",),
    limits_note="documented: 50/s per organization on Lago's cloud, shared by all its keys and "
    "integrations (self-hosted: none); the example takes half, leaving the rest to them",
    build=_build,
)
_LOOKUP = SPEC.lookup or SPEC.void
