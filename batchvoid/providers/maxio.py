"""Maxio Advanced Billing (formerly Chargify): Basic with the API key and the password `x`, a
base URL per site (subdomain), a JSON body with the required void reason, at most 4 requests in
flight per site. No idempotency header; a void, paid or draft invoice answers one 422 alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    basic_auth,
    describe,
    json_body,
    maybe_already_void,
    settled,
    string,
    transient,
)
from batchvoid.providers.facts import ProviderSpec, Route, RowField

REASON = RowField(
    "void_reason",
    "why it is voided, sent to Maxio (which requires one); default: the profile's void_reason",
    required=True,
)
MAX_IN_FLIGHT = 4  # per site: more are queued, slowed, then refused with 429
PASSWORD = "x"  # noqa: S105 - documented: the Basic password is this letter for every key, no secret


def reason_of(item: Item, default: str | None) -> str | None:
    """The void reason Maxio gets for `item`: the row's, else the profile's."""
    return item.metadata.get(REASON.name, "").strip() or default


@dataclass(frozen=True, slots=True)
class Maxio(AdapterBase):
    base_url: str
    authorization: str = field(repr=False)
    api_key: str = field(repr=False)
    void_reason: str | None = None

    def _request(self, route: Route, item: Item, body: bytes | None) -> Request:
        headers = {"Authorization": self.authorization, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = route.url(self.base_url, invoice_id=item.invoice_id)
        return Request(
            route.method, url, headers, body, secrets=(self.authorization, self.api_key), public=(PASSWORD,)
        )

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        reason = reason_of(item, self.void_reason)
        if reason is None:  # the job file reader refuses such rows before anything is sent
            raise ValueError(f"line {item.line}: no void_reason for a Maxio invoice")
        return self._request(SPEC.void, item, orjson.dumps({"void": {"reason": reason}}))

    def parse_void(self, item: Item, response: Response) -> Outcome:
        invoice = _invoice(response)
        if response.status == 200:
            if invoice.get("status") == "voided":  # the usual answer: no reason to word
                return Outcome(OutcomeKind.VOIDED, "", 200, string(invoice.get("uid")))
            reason = f"answered 200 but the invoice status is {invoice.get('status')!r}"
            return Outcome(OutcomeKind.REJECTED, reason, 200)
        reason = _reason(response)
        if (shared := transient(response, reason)) is not None:
            return shared
        if response.status == 422:  # its answer to a void, paid, draft or processing invoice alike
            return maybe_already_void(SPEC, response, reason)
        return Outcome(OutcomeKind.REJECTED, reason, response.status)

    def lookup_request(self, item: Item) -> Request | None:
        return self._request(_LOOKUP, item, None)

    def parse_lookup(self, item: Item, response: Response, rejected: Outcome) -> Outcome:
        if response.status == 200:
            return settled(SPEC, rejected, _invoice(response).get("status"))
        return transient(response, f"status lookup: {_reason(response)}") or rejected


def _invoice(response: Response) -> dict[str, Any]:
    """The answer's invoice: the body itself, as documented (or wrapped in "invoice")."""
    body = json_body(response)
    if isinstance(body, dict) and isinstance(body.get("invoice"), dict):
        body = body["invoice"]
    return body if isinstance(body, dict) else {}


def _reason(response: Response) -> str:
    body = json_body(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return describe(response, "; ".join(str(e) for e in errors))
    if response.status == 404:  # Maxio's 404 has a null body
        return "HTTP 404: no invoice with this uid at this site: check the uid and the profile's base_url"
    return describe(response, None)


def _build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> Maxio:
    key = secrets["api_key"]
    return Maxio(base_url, basic_auth(key, PASSWORD), key, options.get(REASON.name))


SPEC = ProviderSpec(
    type="maxio",
    title="Maxio",
    credentials={"api_key_env": "MAXIO_API_KEY"},
    options={REASON.name: "the void reason sent for rows that give none (Maxio requires one)"},
    default_base_url=None,  # https://{subdomain}.chargify.com, EU: https://{subdomain}.ebilling.maxio.com
    void=Route("POST", "/invoices/{invoice_id}/void.json"),
    lookup=Route("GET", "/invoices/{invoice_id}.json"),
    void_status="voided",
    documented_limits=(),
    example_limits=("10000/1h",),
    limits_note=f"documented: at most {MAX_IN_FLIGHT} requests in flight per site (concurrency is "
    "capped there), no window; the example holds 10,000/hour, a third party's unverified figure",
    max_in_flight=MAX_IN_FLIGHT,
    row_fields=(REASON,),
    build=_build,
)
_LOOKUP = SPEC.lookup or SPEC.void
