"""Stripe: Basic auth with the secret key, form-encoded void, `Idempotency-Key`, a read to
confirm "already void" (Stripe documents no answer to a second void)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    basic_auth,
    describe,
    header,
    json_object,
    maybe_already_void,
    settled,
    string,
    transient,
)
from batchvoid.providers.facts import Idempotency, ProviderSpec, Route

IDEMPOTENCY = Idempotency(
    "Idempotency-Key",
    max_length=255,
    note="a key's first answer (500s too) is replayed for at least 24 h",
)


@dataclass(frozen=True, slots=True)
class Stripe(AdapterBase):
    base_url: str
    authorization: str = field(repr=False)
    secret_key: str = field(repr=False)

    def _request(self, route: Route, item: Item, extra: Mapping[str, str], body: bytes | None) -> Request:
        headers = {"Authorization": self.authorization, "Accept": "application/json", **extra}
        url = route.url(self.base_url, invoice_id=item.invoice_id)
        return Request(route.method, url, headers, body, secrets=(self.authorization, self.secret_key))

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        # The void takes an optional form body; an empty one is valid (no field is needed).
        extra = {"Content-Type": "application/x-www-form-urlencoded", IDEMPOTENCY.header: idempotency_key}
        return self._request(SPEC.void, item, extra, b"")

    def parse_void(self, item: Item, response: Response) -> Outcome:
        fields = json_object(response)
        if response.status == 200:
            if fields.get("status") == "void":  # the usual answer: no reason to word
                return Outcome(OutcomeKind.VOIDED, "", 200, string(fields.get("id")))
            reason = f"answered 200 but the invoice status is {fields.get('status')!r}"
            return Outcome(OutcomeKind.REJECTED, reason, 200)
        error = _error(fields)
        code, kind = error.get("code"), error.get("type")
        message = error.get("message")
        reason = describe(response, message and (f"{code}: {message}" if code else message))
        if response.status == 409:  # a request with the same key is still in flight
            return Outcome(OutcomeKind.RETRYABLE, reason, 409)
        if header(response.headers, "Stripe-Should-Retry") == "false" and response.status >= 500:
            return Outcome(OutcomeKind.REJECTED, f"{reason} (Stripe says not to retry)", response.status)
        if (shared := transient(response, reason)) is not None:
            return shared
        if response.status == 400 and kind == "invalid_request_error" and code not in _NOT_STATE:
            # Undocumented: Stripe's answer to voiding a void (or paid, or draft) invoice.
            return maybe_already_void(SPEC, response, reason)
        return Outcome(OutcomeKind.REJECTED, reason, response.status)

    def lookup_request(self, item: Item) -> Request | None:
        return self._request(_LOOKUP, item, {}, None)

    def parse_lookup(self, item: Item, response: Response, rejected: Outcome) -> Outcome:
        fields = json_object(response)
        if response.status == 200:
            return settled(SPEC, rejected, fields.get("status"))
        reason = describe(response, _error(fields).get("message"))
        return transient(response, f"status lookup: {reason}") or rejected


# Errors of the request itself, not of the invoice's state: never "maybe already void".
_NOT_STATE = frozenset(
    {"resource_missing", "parameter_unknown", "parameter_invalid_empty", "idempotency_key_in_use"}
)


def _error(fields: dict[str, Any]) -> dict[str, Any]:
    error = fields.get("error")
    return error if isinstance(error, dict) else {}


def _build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> Stripe:
    key = secrets["secret_key"]
    basic = basic_auth(key)  # the key, an empty password
    return Stripe(base_url, basic, key)


SPEC = ProviderSpec(
    type="stripe",
    title="Stripe",
    credentials={"secret_key_env": "STRIPE_SECRET_KEY"},
    options={},
    default_base_url="https://api.stripe.com",
    void=Route("POST", "/v1/invoices/{invoice_id}/void"),
    lookup=Route("GET", "/v1/invoices/{invoice_id}"),
    void_status="void",
    documented_limits=("100/1s",),
    example_limits=("25/1s",),
    limits_note="documented: 100/s in live mode, 25/s in test mode (sk_test_ keys); the example "
    "holds the test mode's 25/s: set 100/1s for a live key",
    idempotency=IDEMPOTENCY,
    build=_build,
)
_LOOKUP = SPEC.lookup or SPEC.void
