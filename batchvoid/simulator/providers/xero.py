"""Simulated Xero: OAuth 2.0 bearer tokens, `xero-tenant-id`, `Status: VOIDED`, ValidationExceptions.

The lane checks the bearer token against this provider's token issuer; `authenticate` checks
the tenant. Open invoices are AUTHORISED; `draft...` ids are DRAFT. Every refused status change
is the one ValidationException Xero answers ("Invoice not of valid status for modification"),
a paid invoice gets Xero's payment message, and `GET /Invoices/{id}` tells them apart. The 401
and 404 bodies are this simulator's (the facts give only the 400 shape).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from batchvoid.providers.xero import IDEMPOTENCY, SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, json_answer, parse_json
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, routes
from batchvoid.simulator.ratelimit import whole_seconds
from batchvoid.simulator.stats import Tally

_MAX_KEY = IDEMPOTENCY.max_length or 128
_STATUS = {
    InvoiceState.OPEN: "AUTHORISED",
    InvoiceState.PAID: "PAID",
    InvoiceState.VOID: "VOIDED",
    InvoiceState.DRAFT: "DRAFT",
}
NOT_VALID_STATUS = "Invoice not of valid status for modification"
HAS_PAYMENT = "This document cannot be edited as it has a payment or credit note allocated to it."


def _validation(message: str, invoice_id: str, tally: Tally) -> Answer:
    element = {"InvoiceID": invoice_id, "ValidationErrors": [{"Message": message}]}
    payload = {
        "ErrorNumber": 10,
        "Type": "ValidationException",
        "Message": "A validation exception occurred",
        "Elements": [element],
    }
    return json_answer(400, payload, tally)


def _problem(status: int, title: str, detail: str, tally: Tally) -> Answer:
    return json_answer(status, {"Type": None, "Title": title, "Status": status, "Detail": detail}, tally)


_UNAUTHORIZED = _problem(401, "Unauthorized", "AuthenticationUnsuccessful", Tally.AUTH_FAILED)
_FORBIDDEN = _problem(403, "Forbidden", "AuthorizationUnsuccessful", Tally.AUTH_FAILED)
_NOT_FOUND = Answer(404, b"The resource you're looking for cannot be found", Tally.NOT_FOUND, "text/plain")


def _invoice(invoice_id: str, state: InvoiceState) -> dict[str, Any]:
    total = amount_cents(invoice_id) / 100
    paid = state is InvoiceState.PAID
    return {
        "Type": "ACCREC",
        "InvoiceID": invoice_id,
        "InvoiceNumber": f"INV-{invoice_id[:8]}",
        "Status": _STATUS[state],
        "Total": total,
        "AmountDue": 0 if paid or state is InvoiceState.VOID else total,
        "AmountPaid": total if paid else 0,
        "CurrencyCode": "USD",
    }


def _invoices(invoice_id: str, state: InvoiceState, tally: Tally) -> Answer:
    payload = {
        "Id": str(uuid.uuid4()),
        "Status": "OK",
        "ProviderName": "batchvoid",
        "Invoices": [_invoice(invoice_id, state)],
    }
    return json_answer(200, payload, tally)


@dataclass(frozen=True, slots=True)
class Xero:
    """Xero's `POST` and `GET /api.xro/2.0/Invoices/{InvoiceID}`, and its token endpoint."""

    client_id: str
    client_secret: str
    tenant_id: str

    name: ClassVar[str] = "xero"
    has_drafts: ClassVar[bool] = True
    routes: ClassVar[Sequence[Route]] = routes(SPEC)
    token_prefix: ClassVar[str] = "sim_xero"  # noqa: S105 - in the tokens it issues
    token_lifetime_s: ClassVar[float] = 1800  # documented: 30 minutes

    def authenticate(self, incoming: Incoming) -> Answer | None:
        if incoming.headers.get("xero-tenant-id") != self.tenant_id:
            return _FORBIDDEN
        return None

    def unauthorized(self) -> Answer:
        return _UNAUTHORIZED

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        header = incoming.headers.get("Authorization", "")
        return _problem(401, "Unauthorized", f"AuthenticationUnsuccessful: {header}", Tally.AUTH_FAILED)

    def throttled(self, wait_s: float) -> Answer:
        answer = _problem(429, "Too Many Requests", "rate limit exceeded", Tally.THROTTLED)
        return answer.with_headers(
            {"Retry-After": str(whole_seconds(wait_s)), "X-Rate-Limit-Problem": "minute"}
        )

    def server_error(self, status: int) -> Answer:
        return _problem(status, "Internal Server Error", "An error occurred in Xero", Tally.FAULT_ERROR)

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        invoice_id = incoming.params["invoice_id"]
        if action is Action.LOOKUP:
            state = book.state(self.name, invoice_id)
            if state is InvoiceState.MISSING:
                return _NOT_FOUND.counted_as(Tally.LOOKUPS)
            return _invoices(invoice_id, state, Tally.LOOKUPS)
        key = incoming.headers.get(IDEMPOTENCY.header)
        if key is not None and len(key) > _MAX_KEY:
            return _validation(
                f"{IDEMPOTENCY.header} must be at most {_MAX_KEY} characters",
                invoice_id,
                Tally.REJECTED,
            )
        if key:
            stored = replays.get(key)
            if stored is not None:
                return stored.answer.counted_as(Tally.IDEMPOTENT_REPLAYS)
            return replays.keep(key, incoming.raw_path, self._void(invoice_id, incoming.body, book))
        return self._void(invoice_id, incoming.body, book)

    def _void(self, invoice_id: str, body: bytes, book: InvoiceBook) -> Answer:
        try:
            payload = parse_json(body)
        except ValueError:
            return _validation("The request body is not valid JSON", invoice_id, Tally.REJECTED)
        invoices = payload.get("Invoices") if isinstance(payload, dict) else None
        first = invoices[0] if isinstance(invoices, list) and len(invoices) == 1 else None
        if not isinstance(first, dict) or first.get("InvoiceID") != invoice_id:
            return _validation(
                "The InvoiceID in the body must match the one in the path", invoice_id, Tally.REJECTED
            )
        if first.get("Status") != "VOIDED":
            return _validation(
                f"Status {first.get('Status')!r} is not the one this simulator takes",
                invoice_id,
                Tally.REJECTED,
            )
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                return _invoices(invoice_id, InvoiceState.VOID, Tally.VOIDED)
            case InvoiceState.MISSING:
                return _NOT_FOUND
            case InvoiceState.VOID:
                return _validation(NOT_VALID_STATUS, invoice_id, Tally.ALREADY_VOID)
            case InvoiceState.PAID:
                return _validation(HAS_PAYMENT, invoice_id, Tally.REJECTED)
            case _:
                return _validation(NOT_VALID_STATUS, invoice_id, Tally.REJECTED)
