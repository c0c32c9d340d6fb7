"""Simulated Lago (one organization): Bearer API key, `{"status", "error", "code"}` errors, no
idempotency header, and the 405 `not_voidable` Lago answers for any invoice not `finalized`
(a voided or a draft one alike) and, as its spec says, for a paid one voided without a body."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from batchvoid.providers.lago import SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, json_answer, parse_json
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, routes, utc
from batchvoid.simulator.ratelimit import whole_seconds
from batchvoid.simulator.stats import Tally

# state -> (status, payment_status) as Lago's invoice object shows them
_SHOWN = {
    InvoiceState.OPEN: ("finalized", "pending"),
    InvoiceState.PAID: ("finalized", "succeeded"),
    InvoiceState.VOID: ("voided", "pending"),
    InvoiceState.DRAFT: ("draft", "pending"),
}


def _error(status: int, error: str, code: str, tally: Tally, **extra: Any) -> Answer:
    return json_answer(status, {"status": status, "error": error, "code": code, **extra}, tally)


_UNAUTHORIZED = json_answer(401, {"status": 401, "error": "Unauthorized"}, Tally.AUTH_FAILED)
_NOT_VOIDABLE = "not_voidable"
_BAD_BODY = _error(400, "Bad Request", "bad_request", Tally.REJECTED)
_PREMIUM = _error(403, "Forbidden", "feature_unavailable", Tally.REJECTED)  # credit notes need a licence


def _not_voidable(tally: Tally) -> Answer:
    return _error(405, "Method Not Allowed", _NOT_VOIDABLE, tally)


def _not_found(tally: Tally) -> Answer:
    return _error(404, "Not Found", "invoice_not_found", tally)


def _invoice(invoice_id: str, state: InvoiceState, wall: float) -> dict[str, Any]:
    status, payment_status = _SHOWN[state]
    stamp = utc(wall).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "invoice": {
            "lago_id": invoice_id,
            "number": f"SIM-{amount_cents(invoice_id)}",
            "status": status,
            "payment_status": payment_status,
            "invoice_type": "one_off",
            "currency": "USD",
            "total_amount_cents": amount_cents(invoice_id),
            "issuing_date": dt.date(2026, 11, 1).isoformat(),
            "voided_at": stamp if status == "voided" else None,
            "updated_at": stamp,
        }
    }


@dataclass(frozen=True, slots=True)
class Lago:
    """Lago's `POST /api/v1/invoices/{lago_id}/void` and `GET /api/v1/invoices/{lago_id}`."""

    api_key: str = field(repr=False)

    name: ClassVar[str] = "lago"
    has_drafts: ClassVar[bool] = True
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def _key(self, incoming: Incoming) -> str:
        scheme, _, token = incoming.headers.get("Authorization", "").partition(" ")
        return token if scheme == "Bearer" else ""

    def authenticate(self, incoming: Incoming) -> Answer | None:
        return None if self._key(incoming) == self.api_key else _UNAUTHORIZED

    def unauthorized(self) -> Answer:
        return _UNAUTHORIZED

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        message = f"no organization has the API key {self._key(incoming)}"
        return json_answer(
            401, {"status": 401, "error": "Unauthorized", "message": message}, Tally.AUTH_FAILED
        )

    def throttled(self, wait_s: float) -> Answer:
        # Lago sends no Retry-After: its X-RateLimit-Reset says the seconds until the window resets.
        answer = _error(429, "Too Many Requests", "too_many_requests", Tally.THROTTLED)
        return answer.with_headers(
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(whole_seconds(wait_s))}
        )

    def server_error(self, status: int) -> Answer:
        return json_answer(status, {"status": status, "error": "Internal Server Error"}, Tally.FAULT_ERROR)

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        invoice_id = incoming.params["invoice_id"]
        if action is Action.LOOKUP:
            state = book.state(self.name, invoice_id)
            if state is InvoiceState.MISSING:
                return _not_found(Tally.LOOKUPS)
            return json_answer(200, _invoice(invoice_id, state, incoming.wall), Tally.LOOKUPS)
        if incoming.body.strip():
            try:
                payload = parse_json(incoming.body)
            except ValueError:
                return _BAD_BODY
            if not isinstance(payload, dict):
                return _BAD_BODY
            if payload.get("generate_credit_note"):
                return _PREMIUM
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                return json_answer(200, _invoice(invoice_id, InvoiceState.VOID, incoming.wall), Tally.VOIDED)
            case InvoiceState.MISSING:
                return _not_found(Tally.NOT_FOUND)
            case InvoiceState.VOID:
                return _not_voidable(Tally.ALREADY_VOID)
            case _:  # a draft, or paid (no body: the spec's payment check)
                return _not_voidable(Tally.REJECTED)
