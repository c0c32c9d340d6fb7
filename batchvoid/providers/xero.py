"""Xero (Accounting API 2.0): OAuth 2.0, `xero-tenant-id`, a void is `Status: VOIDED` in the body.

Xero answers every refused status change with one 400 ValidationException ("Invoice not of
valid status for modification" for a void invoice and for a draft alike), so batchvoid reads
the invoice (`GET /Invoices/{InvoiceID}`) and decides from its `Status`: VOIDED is already
void; DRAFT and SUBMITTED cannot be voided at all (Xero deletes them instead), and the reason
says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    describe,
    header,
    json_body,
    maybe_already_void,
    settled,
    transient,
)
from batchvoid.providers.facts import Idempotency, OAuthFacts, ProviderSpec, Route

if TYPE_CHECKING:
    from batchvoid.oauth import AccessToken

IDEMPOTENCY = Idempotency("Idempotency-Key", max_length=128, note="replay window not documented")
_NOT_VOIDABLE_YET = frozenset({"DRAFT", "SUBMITTED"})  # deleted in Xero, never voided


@dataclass(frozen=True, slots=True)
class Xero(AdapterBase):
    base_url: str
    token: AccessToken = field(repr=False)
    tenant_id: str

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token.access_token}",
            "xero-tenant-id": self.tenant_id,
            "Accept": "application/json",
        }

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        body = {"Invoices": [{"InvoiceID": item.invoice_id, "Status": "VOIDED"}]}
        headers = {
            **self._headers(),
            "Content-Type": "application/json",
            IDEMPOTENCY.header: idempotency_key[: IDEMPOTENCY.max_length],
        }
        url = SPEC.void.url(self.base_url, invoice_id=item.invoice_id)
        return Request(SPEC.void.method, url, headers, orjson.dumps(body), secrets=self.token.secrets)

    def parse_void(self, item: Item, response: Response) -> Outcome:
        body = json_body(response)
        invoice = _invoice(body)
        if response.status == 200:
            status = invoice.get("Status")
            if status == "VOIDED":
                return Outcome(OutcomeKind.VOIDED, "", 200, invoice.get("InvoiceID") or None)
            return Outcome(OutcomeKind.REJECTED, f"answered 200 but the invoice status is {status!r}", 200)
        reason = describe(response, _message(body, response))
        if (shared := transient(response, reason)) is not None:
            return shared
        if response.status == 400 and isinstance(body, dict) and body.get("Type") == "ValidationException":
            # One answer for a void, a draft and a paid invoice alike: read the invoice to decide.
            return maybe_already_void(SPEC, response, reason)
        return Outcome(OutcomeKind.REJECTED, reason, response.status)

    def lookup_request(self, item: Item) -> Request | None:
        url = _LOOKUP.url(self.base_url, invoice_id=item.invoice_id)
        return Request(_LOOKUP.method, url, self._headers(), secrets=self.token.secrets)

    def parse_lookup(self, item: Item, response: Response, rejected: Outcome) -> Outcome:
        body = json_body(response)
        if response.status == 200:
            status = _invoice(body).get("Status")
            outcome = settled(SPEC, rejected, status)
            if status in _NOT_VOIDABLE_YET:
                reason = (
                    f"{outcome.reason}: Xero voids only approved (AUTHORISED) invoices; a draft or "
                    "submitted one cannot be voided, only deleted, in Xero"
                )
                return replace(outcome, reason=reason)
            return outcome
        reason = describe(response, _message(body, response))
        return transient(response, f"status lookup: {reason}") or replace(rejected, check_status=False)


def _invoice(body: Any) -> dict[str, Any]:
    invoices = body.get("Invoices") if isinstance(body, dict) else None
    first = invoices[0] if isinstance(invoices, list) and invoices else None
    return first if isinstance(first, dict) else {}


def _message(body: Any, response: Response) -> str:
    """Xero's own words: the validation errors of the elements, else the top message; a 429's limit."""
    if response.status == 429:
        problem = header(response.headers, "X-Rate-Limit-Problem")
        return f"rate limit reached ({problem or 'which one not said'})"
    if not isinstance(body, dict):
        return ""
    errors = [
        error.get("Message")
        for element in body.get("Elements") or []
        if isinstance(element, dict)
        for error in element.get("ValidationErrors") or []
        if isinstance(error, dict) and error.get("Message")
    ]
    if errors:
        return "; ".join(str(error) for error in dict.fromkeys(errors))
    return str(body.get("Message") or body.get("Detail") or body.get("Title") or "")


OAUTH = OAuthFacts(
    token_url="https://identity.xero.com/connect/token",  # noqa: S106 - a URL
    access_lifetime_s=1800,
    authorize="README: 'Authorising Xero and QuickBooks'",
    grace="Xero accepts the previous refresh token again for 30 minutes after its first use",
)


def _connect(base_url: str, token: AccessToken, options: Mapping[str, str]) -> Xero:
    return Xero(base_url, token, options["tenant_id"])


def _no_build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> Xero:
    raise ValueError("a Xero adapter is built from its OAuth connection (ProviderSpec.connect)")


SPEC = ProviderSpec(
    type="xero",
    title="Xero",
    credentials={"client_id_env": "XERO_CLIENT_ID", "client_secret_env": "XERO_CLIENT_SECRET"},
    options={
        "tenant_id": "the organisation's tenant id, sent as xero-tenant-id (GET "
        "https://api.xero.com/connections lists them after authorising)",
    },
    default_base_url="https://api.xero.com",
    void=Route("POST", "/api.xro/2.0/Invoices/{invoice_id}"),
    lookup=Route("GET", "/api.xro/2.0/Invoices/{invoice_id}"),
    void_status="VOIDED",
    documented_limits=("60/60s", "5000/24h"),
    example_limits=("60/60s", "5000/24h"),
    limits_note="documented, per tenant: 60 a minute and 5,000 a day, and 5 requests in flight",
    idempotency=IDEMPOTENCY,
    build=_no_build,
    required_options=("tenant_id",),
    max_in_flight=5,
    oauth=OAUTH,
    connect=_connect,
)
_LOOKUP = SPEC.lookup or SPEC.void
