"""Simulated Stripe: Basic or Bearer secret key, `Idempotency-Key` replay, `{"error": ...}` bodies.

Stripe documents no answer to voiding a void, paid or draft invoice; this simulator answers the
worst documented case, a generic 400 `invalid_request_error`, so only a read can tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from batchvoid.providers.stripe import IDEMPOTENCY, SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, json_answer
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, basic_login, routes
from batchvoid.simulator.stats import Tally


def _error(status: int, error_type: str, code: str, message: str, tally: Tally) -> Answer:
    payload = {
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
        }
    }
    return json_answer(status, payload, tally)


_UNAUTHORIZED = _error(
    401, "invalid_request_error", "api_key_invalid", "Invalid API Key provided.", Tally.AUTH_FAILED
)
_THROTTLED = _error(
    429, "invalid_request_error", "rate_limit", "Too many requests hit the API too quickly.", Tally.THROTTLED
)
_KEY_TOO_LONG = _error(
    400,
    "invalid_request_error",
    "idempotency_key_too_long",
    f"Idempotency-Key must be at most {IDEMPOTENCY.max_length} characters.",
    Tally.REJECTED,
)
_KEY_REUSED = _error(
    400,
    "idempotency_error",
    "idempotency_key_in_use",
    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
    Tally.REJECTED,
)


def _not_found(invoice_id: str, tally: Tally) -> Answer:
    return _error(404, "invalid_request_error", "resource_missing", f"No such invoice: '{invoice_id}'", tally)


def _not_voidable(invoice_id: str, status: str, tally: Tally) -> Answer:
    message = f"You can only void an open or uncollectible invoice. Invoice {invoice_id} is {status}."
    return _error(400, "invalid_request_error", "invoice_not_open", message, tally)


def _invoice(invoice_id: str, status: str, wall: float) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "status": status,
        "amount_due": amount_cents(invoice_id),
        "currency": "usd",
        "customer": "cus_simulator",
        "livemode": False,
        "status_transitions": {"voided_at": int(wall) if status == "void" else None},
    }


@dataclass(frozen=True, slots=True)
class Stripe:
    """Stripe's `POST /v1/invoices/{id}/void` and `GET /v1/invoices/{id}`."""

    secret_key: str = field(repr=False)

    name: ClassVar[str] = "stripe"
    has_drafts: ClassVar[bool] = True
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def _key(self, incoming: Incoming) -> str:
        scheme, _, token = incoming.headers.get("Authorization", "").partition(" ")
        return token if scheme == "Bearer" else basic_login(incoming)[0]

    def authenticate(self, incoming: Incoming) -> Answer | None:
        return None if self._key(incoming) == self.secret_key else _UNAUTHORIZED

    def unauthorized(self) -> Answer:
        return _UNAUTHORIZED

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        message = f"Invalid API Key provided: {self._key(incoming)}"
        return _error(401, "invalid_request_error", "api_key_invalid", message, Tally.AUTH_FAILED)

    def throttled(self, wait_s: float) -> Answer:
        return _THROTTLED

    def server_error(self, status: int) -> Answer:
        answer = _error(status, "api_error", "api_error", "An unknown error occurred.", Tally.FAULT_ERROR)
        return answer.with_headers({"Stripe-Should-Retry": "true"})

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        invoice_id = incoming.params["invoice_id"]
        if action is Action.LOOKUP:
            state = book.state(self.name, invoice_id)
            if state is InvoiceState.MISSING:
                return _not_found(invoice_id, Tally.LOOKUPS)
            return json_answer(200, _invoice(invoice_id, state.value, incoming.wall), Tally.LOOKUPS)
        if incoming.headers.get("Content-Type", "application/x-www-form-urlencoded").split(";")[0] != (
            "application/x-www-form-urlencoded"
        ):
            message = "Invalid request: the body must be application/x-www-form-urlencoded."
            return _error(400, "invalid_request_error", "parameter_invalid_empty", message, Tally.REJECTED)
        key = incoming.headers.get(IDEMPOTENCY.header)
        if not key:
            return self._void(invoice_id, book, incoming.wall)
        if len(key) > (IDEMPOTENCY.max_length or len(key)):
            return _KEY_TOO_LONG
        fingerprint = f"{incoming.raw_path}?{incoming.body!r}"
        stored = replays.get(key)
        if stored is None:
            return replays.keep(key, fingerprint, self._void(invoice_id, book, incoming.wall))
        if stored.fingerprint != fingerprint:
            return _KEY_REUSED
        return stored.answer.with_headers({"Idempotent-Replayed": "true"}).counted_as(
            Tally.IDEMPOTENT_REPLAYS
        )

    def _void(self, invoice_id: str, book: InvoiceBook, wall: float) -> Answer:
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                return json_answer(200, _invoice(invoice_id, "void", wall), Tally.VOIDED)
            case InvoiceState.MISSING:
                return _not_found(invoice_id, Tally.NOT_FOUND)
            case InvoiceState.VOID:
                return _not_voidable(invoice_id, "void", Tally.ALREADY_VOID)
            case state:
                return _not_voidable(invoice_id, state.value, Tally.REJECTED)
