"""Chargebee (Billing, API v2): Basic auth with the API key, a per-site base URL, a form body
with an optional `void_reason_code` and `comment`, `chargebee-idempotency-key`, and a read to
confirm "already void" (Chargebee documents no answer to a second void)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    basic_auth,
    describe,
    json_object,
    maybe_already_void,
    settled,
    string,
    transient,
)
from batchvoid.providers.facts import Idempotency, ProviderSpec, Route, RowField

IDEMPOTENCY = Idempotency(
    "chargebee-idempotency-key",
    max_length=100,
    note="a key's first answer is replayed for 30 minutes",
)
REASON = RowField(
    "void_reason_code",
    "a void reason code set up in Chargebee (Settings > Reason Codes; case-sensitive); "
    "default: the profile's",
)
COMMENT = RowField(
    "comment", "an internal note on the void, at most 300 characters; default: the profile's", max_length=300
)
_FORM = "application/x-www-form-urlencoded"
BUSINESS_ENTITY = "chargebee-business-entity-id"


@dataclass(frozen=True, slots=True)
class Chargebee(AdapterBase):
    base_url: str
    authorization: str = field(repr=False)
    api_key: str = field(repr=False)
    void_reason_code: str | None = None
    comment: str | None = None
    business_entity_id: str | None = None  # a multi-entity site's entity: every request names it

    def _request(self, route: Route, item: Item, extra: Mapping[str, str], body: bytes | None) -> Request:
        headers = {"Authorization": self.authorization, "Accept": "application/json", **extra}
        if self.business_entity_id:
            headers[BUSINESS_ENTITY] = self.business_entity_id
        url = route.url(self.base_url, invoice_id=item.invoice_id)
        return Request(route.method, url, headers, body, secrets=(self.authorization, self.api_key))

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        # The row's value, else the profile's; neither: the field is not sent (both are optional).
        form = {
            name: value
            for name, default in ((REASON.name, self.void_reason_code), (COMMENT.name, self.comment))
            if (value := (item.metadata.get(name) or "").strip() or default)
        }
        extra = {"Content-Type": _FORM, IDEMPOTENCY.header: idempotency_key}
        return self._request(SPEC.void, item, extra, urlencode(form).encode())

    def parse_void(self, item: Item, response: Response) -> Outcome:
        fields = json_object(response)
        if response.status == 200:
            invoice = _invoice(fields)
            if invoice.get("status") == "voided":  # the usual answer: no reason to word
                return Outcome(OutcomeKind.VOIDED, "", 200, string(invoice.get("id")))
            reason = f"answered 200 but the invoice status is {invoice.get('status')!r}"
            return Outcome(OutcomeKind.REJECTED, reason, 200)
        code, message, param = fields.get("api_error_code"), fields.get("message"), fields.get("param")
        reason = describe(response, message and (f"{code}: {message}" if code else message))
        if param and isinstance(param, str) and param not in reason:
            reason += f" (parameter: {param})"
        if response.status == 429 and code == "lock_timeout":  # another request holds the invoice
            return Outcome(OutcomeKind.RETRYABLE, reason, 429)
        if (shared := transient(response, reason)) is not None:
            return shared
        if response.status == 409 and code == "invalid_state_for_request":
            # Undocumented: Chargebee's likely answer to voiding a voided (or paid) invoice.
            return maybe_already_void(SPEC, response, reason)
        return Outcome(OutcomeKind.REJECTED, reason, response.status)

    def lookup_request(self, item: Item) -> Request | None:
        return self._request(_LOOKUP, item, {}, None)

    def parse_lookup(self, item: Item, response: Response, rejected: Outcome) -> Outcome:
        fields = json_object(response)
        if response.status == 200:
            return settled(SPEC, rejected, _invoice(fields).get("status"))
        reason = describe(response, fields.get("message"))
        return transient(response, f"status lookup: {reason}") or rejected


def _invoice(fields: dict[str, Any]) -> dict[str, Any]:
    invoice = fields.get("invoice")
    return invoice if isinstance(invoice, dict) else {}


def _build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> Chargebee:
    key = secrets["api_key"]
    basic = basic_auth(key)  # the key, an empty password
    return Chargebee(
        base_url,
        basic,
        key,
        options.get(REASON.name),
        options.get(COMMENT.name),
        options.get("business_entity_id"),
    )


SPEC = ProviderSpec(
    type="chargebee",
    title="Chargebee",
    credentials={"api_key_env": "CHARGEBEE_API_KEY"},
    options={
        REASON.name: "void reason code sent with every void (a row's overrides it); set it if "
        "the site makes one mandatory",
        COMMENT.name: "internal note sent with every void, at most 300 characters (a row's overrides it)",
        "business_entity_id": f"on a site with several business entities, the one whose invoices "
        f"these are, sent as {BUSINESS_ENTITY} with every request",
    },
    default_base_url=None,
    account_url="https://{site}.chargebee.com, or https://{site}-test.chargebee.com for a test site",
    api_prefix="/api/v2",
    void=Route("POST", "/api/v2/invoices/{invoice_id}/void"),
    lookup=Route("GET", "/api/v2/invoices/{invoice_id}"),
    void_status="voided",
    documented_limits=("150/60s",),
    example_limits=("150/60s", "5/2s"),
    limits_note="documented per site and minute, by plan: 150 on test sites and the Starter plan, 1000 "
    "on Performance, 3500 on Enterprise, drained as a leaky bucket; the example assumes a test site or "
    "the Starter plan: 150/min, spread (5 per 2 s) so no burst overflows the bucket",
    idempotency=IDEMPOTENCY,
    row_fields=(REASON, COMMENT),
    build=_build,
)
_LOOKUP = SPEC.lookup or SPEC.void
