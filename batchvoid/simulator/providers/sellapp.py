"""Simulated SellApp: Bearer auth, an optional `X-STORE` slug, only PENDING invoices void."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from batchvoid.providers.sellapp import SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, dump
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, numeric_id, routes, utc
from batchvoid.simulator.stats import Tally

_STORE_SLUG = re.compile(r"[a-z0-9-]+")
_CREATED_AT = "2024-01-09T19:33:11.000000Z"


def _error(status: int, message: str, error_type: str, code: str, tally: Tally) -> Answer:
    # Every answer gets its own request_id, so these are built per request.
    return Answer(
        status,
        dump(
            {
                "message": message,
                "type": error_type,
                "code": code,
                "request_id": str(uuid.uuid4()),
            }
        ),
        tally,
    )


def _money(cents: int) -> dict[str, Any]:
    amount = str(cents)
    return {
        "base": amount,
        "currency": "USD",
        "units": 1,
        "vat": 0,
        "total": {"exclusive": amount, "inclusive": amount},
    }


def _invoice(invoice_id: str, wall: float) -> dict[str, Any]:
    now = utc(wall).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    price = _money(amount_cents(invoice_id))
    return {
        "id": numeric_id(invoice_id),
        "payment": {
            "gateway": {
                "data": {"total": price, "customer_email": "customer@example.com"},
                "type": "COINBASE",
            },
            "subtotal": price,
            "expires_at": "2024-01-10T19:33:11.000000Z",
            "full_price": price,
            "original_amount": price,
        },
        "status": {
            "history": [{"setAt": _CREATED_AT, "status": "PENDING", "updatedAt": now}],
            "status": {"setAt": now, "status": "VOIDED", "updatedAt": now},
        },
        "webhooks": [],
        "feedback": "",
        "created_at": _CREATED_AT,
        "updated_at": now,
        "store_id": 1,
        "coupon_id": None,
        "subscription_id": None,
    }


@dataclass(frozen=True, slots=True)
class SellApp:
    """SellApp's `PATCH /api/v2/invoices/{id}/mark-voided`. No idempotency."""

    api_key: str = field(repr=False)

    name: ClassVar[str] = "sellapp"
    has_drafts: ClassVar[bool] = False
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def authenticate(self, incoming: Incoming) -> Answer | None:
        headers = incoming.headers
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.unauthorized()
        store = headers.get("X-STORE")
        if store is not None and not _STORE_SLUG.fullmatch(store):
            return _error(
                403,
                "You do not have access to this store.",
                "authorization_error",
                "forbidden",
                Tally.AUTH_FAILED,
            )
        return None

    def unauthorized(self) -> Answer:
        return _error(401, "Unauthenticated.", "authentication_error", "unauthenticated", Tally.AUTH_FAILED)

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        key = incoming.headers.get("Authorization", "").removeprefix("Bearer ")
        message = f"Unauthenticated: no account has the key <{key}>."
        return _error(401, message, "authentication_error", "unauthenticated", Tally.AUTH_FAILED)

    def throttled(self, wait_s: float) -> Answer:
        return _error(429, "Too Many Attempts.", "rate_limit", "too_many_requests", Tally.THROTTLED)

    def server_error(self, status: int) -> Answer:
        return _error(status, "Server Error", "server_error", "server_error", Tally.FAULT_ERROR)

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        invoice_id = incoming.params["invoice_id"]
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                return Answer(200, dump(_invoice(invoice_id, incoming.wall)), Tally.VOIDED)
            case InvoiceState.VOID:
                return _error(
                    422,
                    "Invoice is already voided.",
                    "invalid_request",
                    "invoice_already_voided",
                    Tally.ALREADY_VOID,
                )
            case InvoiceState.MISSING:
                return _error(404, "Invoice not found.", "not_found", "not_found", Tally.NOT_FOUND)
            case _:
                return _error(
                    422,
                    "Only pending invoices can be marked as voided.",
                    "invalid_request",
                    "invoice_not_pending",
                    Tally.REJECTED,
                )
