"""Simulated Maxio Advanced Billing: Basic with the API key and the password `x`, a JSON body
whose `void.reason` is required, `{"errors": [...]}` bodies, no idempotency.

A void, paid or draft invoice all answer the same 422 (the spec's example words), so only a read
(`GET /invoices/{uid}.json`) tells them apart; an unknown uid answers 404 with a null body.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from batchvoid.providers.maxio import PASSWORD, SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, json_answer, parse_json
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, basic_login, routes
from batchvoid.simulator.stats import Tally

_NOT_VOIDABLE = "Invoice status must be 'open', 'canceled', or 'pending' and non-consolidated to be voided."
_NOT_FOUND_BODY = b"null"


def _errors(status: int, message: str, tally: Tally) -> Answer:
    return json_answer(status, {"errors": [message]}, tally)


_UNAUTHORIZED = _errors(401, "HTTP Basic: Access denied.", Tally.AUTH_FAILED)


def _reason(body: bytes) -> str | None:
    """The request body's `void.reason`, if it is a non-empty string."""
    try:
        payload = parse_json(body)
    except ValueError:
        return None
    void = payload.get("void") if isinstance(payload, dict) else None
    reason = void.get("reason") if isinstance(void, dict) else None
    return reason if isinstance(reason, str) and reason.strip() else None


def _invoice(invoice_id: str, status: str) -> dict[str, Any]:
    return {
        "uid": invoice_id,
        "number": str(amount_cents(invoice_id)),
        "status": status,
        "currency": "USD",
        "total_amount": f"{amount_cents(invoice_id) / 100:.2f}",
        "tax_amount": "0.00",  # an "x" in every answer: the Basic password "x" is not scrubbed from it
        "site_id": 1,
    }


_STATUS = {
    InvoiceState.OPEN: "open",
    InvoiceState.PAID: "paid",
    InvoiceState.VOID: "voided",
    InvoiceState.DRAFT: "draft",
}


@dataclass(frozen=True, slots=True)
class Maxio:
    """Maxio's `POST /invoices/{uid}/void.json` and `GET /invoices/{uid}.json`."""

    api_key: str = field(repr=False)

    name: ClassVar[str] = "maxio"
    has_drafts: ClassVar[bool] = True
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def authenticate(self, incoming: Incoming) -> Answer | None:
        return None if basic_login(incoming) == (self.api_key, PASSWORD) else _UNAUTHORIZED

    def unauthorized(self) -> Answer:
        return _UNAUTHORIZED

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        return _errors(401, f"HTTP Basic: Access denied for {basic_login(incoming)[0]}.", Tally.AUTH_FAILED)

    def throttled(self, wait_s: float) -> Answer:
        message = (
            "Your request was denied due to a usage violation. You can track this request with "
            f"support by referencing {uuid.uuid4()}."
        )
        return _errors(429, message, Tally.THROTTLED)

    def server_error(self, status: int) -> Answer:
        return _errors(status, "We're sorry, but something went wrong.", Tally.FAULT_ERROR)

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        invoice_id = incoming.params["invoice_id"]
        if action is Action.LOOKUP:
            state = book.state(self.name, invoice_id)
            if state is InvoiceState.MISSING:
                return Answer(404, _NOT_FOUND_BODY, Tally.LOOKUPS)
            return json_answer(200, _invoice(invoice_id, _STATUS[state]), Tally.LOOKUPS)
        if incoming.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return _errors(422, "Content-Type must be application/json.", Tally.REJECTED)
        if _reason(incoming.body) is None:  # required by the spec (minLength 1)
            return _errors(422, "Reason: cannot be blank.", Tally.REJECTED)
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                return json_answer(200, _invoice(invoice_id, "voided"), Tally.VOIDED)
            case InvoiceState.MISSING:
                return Answer(404, _NOT_FOUND_BODY, Tally.NOT_FOUND)
            case InvoiceState.VOID:
                return _errors(422, _NOT_VOIDABLE, Tally.ALREADY_VOID)
            case _:
                return _errors(422, _NOT_VOIDABLE, Tally.REJECTED)
