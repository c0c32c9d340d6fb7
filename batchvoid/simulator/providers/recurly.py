"""Simulated Recurly (API v3): Basic with the private key, the required versioned `Accept`,
`{"error": {"type", "message"}}` bodies, no idempotency.

An invoice whose id holds `credit` is a credit invoice, any other a charge invoice. Only a
credit invoice can be voided (`PUT .../void`), only an unpaid charge invoice marked failed
(`PUT .../mark_failed`); the wrong call, a second call and a paid invoice all answer the same
generic 422, so only a read (`GET /invoices/{id}`: its `type` and `state`) tells them apart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from batchvoid.providers.recurly import SPEC, VERSION
from batchvoid.simulator.exchange import Action, Answer, Incoming, json_answer
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, basic_login, routes, utc
from batchvoid.simulator.stats import Tally

_VERSIONED = frozenset({f"application/vnd.recurly.{VERSION}", f"application/vnd.recurly.{VERSION}+json"})
_HEADERS: Mapping[str, str] = MappingProxyType({"Recurly-Version": f"recurly.{VERSION}"})
# The simulator's invoice states in Recurly's words, per invoice type.
_STATES: Mapping[str, Mapping[InvoiceState, str]] = MappingProxyType(
    {
        "charge": MappingProxyType(
            {InvoiceState.OPEN: "past_due", InvoiceState.PAID: "paid", InvoiceState.VOID: "failed"}
        ),
        "credit": MappingProxyType(
            {InvoiceState.OPEN: "open", InvoiceState.PAID: "closed", InvoiceState.VOID: "voided"}
        ),
    }
)


def _error(status: int, error_type: str, message: str, tally: Tally, **extra: Any) -> Answer:
    answer = json_answer(status, {"error": {"type": error_type, "message": message, **extra}}, tally)
    return answer.with_headers(_HEADERS)


_UNAUTHORIZED = _error(401, "unauthorized", "Invalid API key. Please check your API key.", Tally.AUTH_FAILED)
_NO_VERSION = _error(
    406,
    "invalid_api_version",
    "That accept header isn't in the format we use to specify an API version. Try one of these instead:",
    Tally.REJECTED,
    acceptable_accept_headers=sorted(_VERSIONED),
)


def invoice_type(invoice_id: str) -> str:
    """The simulated invoice's type, read from its id."""
    return "credit" if "credit" in invoice_id else "charge"


def _not_found(invoice_id: str, tally: Tally) -> Answer:
    return _error(404, "not_found", f"Couldn't find Invoice with id = {invoice_id}", tally)


def _invoice(invoice_id: str, kind: str, state: InvoiceState, wall: float) -> dict[str, Any]:
    recurly_state = _STATES[kind][state]
    closed = recurly_state in ("paid", "closed", "failed", "voided")
    return {
        "id": invoice_id,
        "object": "invoice",
        "type": kind,
        "origin": "purchase" if kind == "charge" else "credit",
        "state": recurly_state,
        "number": str(amount_cents(invoice_id)),
        "currency": "USD",
        "total": amount_cents(invoice_id) / 100 * (-1 if kind == "credit" else 1),
        "closed_at": utc(wall).isoformat().replace("+00:00", "Z") if closed else None,
    }


@dataclass(frozen=True, slots=True)
class Recurly:
    """Recurly's `PUT /invoices/{id}/void`, `PUT /invoices/{id}/mark_failed` and `GET /invoices/{id}`."""

    api_key: str = field(repr=False)

    name: ClassVar[str] = "recurly"
    has_drafts: ClassVar[bool] = False
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def _key(self, incoming: Incoming) -> str:
        return basic_login(incoming)[0]

    def authenticate(self, incoming: Incoming) -> Answer | None:
        return None if self._key(incoming) == self.api_key else _UNAUTHORIZED

    def unauthorized(self) -> Answer:
        return _UNAUTHORIZED

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        return _error(401, "unauthorized", f"Invalid API key: {self._key(incoming)}", Tally.AUTH_FAILED)

    def throttled(self, wait_s: float) -> Answer:
        answer = _error(
            429, "rate_limited", "You have made too many API requests in the last 5 minutes.", Tally.THROTTLED
        )
        reset = int(time.time() + wait_s) + 1  # documented: the Unix second the count resets
        return answer.with_headers(
            {"X-RateLimit-Limit": "400", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
        )

    def server_error(self, status: int) -> Answer:
        if status == 503:
            return _error(503, "service_not_available", "Service unavailable.", Tally.FAULT_ERROR)
        return _error(
            status, "internal_server_error", "An internal server error occurred.", Tally.FAULT_ERROR
        )

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        if incoming.headers.get("Accept", "").strip() not in _VERSIONED:
            return _NO_VERSION
        invoice_id = incoming.params["invoice_id"]
        kind = invoice_type(invoice_id)
        if action is Action.LOOKUP:
            state = book.state(self.name, invoice_id)
            if state is InvoiceState.MISSING:
                return _not_found(invoice_id, Tally.LOOKUPS)
            body = _invoice(invoice_id, kind, state, incoming.wall)
            return json_answer(200, body, Tally.LOOKUPS).with_headers(_HEADERS)
        marking = incoming.raw_path.partition("?")[0].endswith("/mark_failed")
        if book.state(self.name, invoice_id) is InvoiceState.MISSING:
            book.void_requests[(self.name, invoice_id)] += 1
            return _not_found(invoice_id, Tally.NOT_FOUND)
        if marking != (kind == "charge"):  # void of a charge invoice, mark_failed of a credit one
            book.void_requests[(self.name, invoice_id)] += 1
            return _refused(marking, Tally.REJECTED)
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                body = _invoice(invoice_id, kind, InvoiceState.VOID, incoming.wall)
                return json_answer(200, body, Tally.VOIDED).with_headers(_HEADERS)
            case InvoiceState.VOID:
                return _refused(marking, Tally.ALREADY_VOID)
            case _:
                return _refused(marking, Tally.REJECTED)


def _refused(marking: bool, tally: Tally) -> Answer:
    """Recurly's generic 422: the same words for every reason the call does not apply."""
    if marking:
        message = "Only invoices with the pending, processing or past_due states can be marked as failed."
    else:
        message = "Invoice did not meet the conditions to be voided."
    return _error(422, "validation", message, tally)
