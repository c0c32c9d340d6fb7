"""Simulated Campfire: `Token` auth, an optional `void_date`, Django REST framework errors."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from batchvoid.providers.campfire import SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, dump, json_answer, parse_json
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, numeric_id, routes, utc
from batchvoid.simulator.ratelimit import whole_seconds
from batchvoid.simulator.stats import Tally

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _detail(status: int, detail: str, tally: Tally) -> Answer:
    return Answer(status, dump({"detail": detail}), tally)


NOT_FOUND_BODY = dump({"detail": "Not found."})
_NO_CREDENTIALS = _detail(401, "Authentication credentials were not provided.", Tally.AUTH_FAILED)
_BAD_TOKEN = _detail(401, "Invalid token.", Tally.AUTH_FAILED)
_BAD_JSON = _detail(400, "JSON parse error", Tally.REJECTED)
_BAD_DATE = json_answer(
    400,
    {"void_date": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]},
    Tally.REJECTED,
)
_NULL_DATE = json_answer(400, {"void_date": ["This field may not be null."]}, Tally.REJECTED)
_NOT_FOUND = Answer(404, NOT_FOUND_BODY, Tally.NOT_FOUND)
_PAID = _detail(400, "Cannot void an invoice that has payments applied.", Tally.REJECTED)
_ALREADY_VOID = _detail(409, "Invoice is already voided.", Tally.ALREADY_VOID)


def _void_date(payload: Any) -> str | Answer | None:
    """The request's `void_date`, None when absent, or the 400 answer saying what is wrong."""
    if not isinstance(payload, dict):
        kind = type(payload).__name__
        return json_answer(
            400,
            {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {kind}."]},
            Tally.REJECTED,
        )
    if "void_date" not in payload:
        return None
    value = payload["void_date"]
    if value is None:
        return _NULL_DATE
    if not (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
        return _BAD_DATE
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return _BAD_DATE
    return value


@dataclass(frozen=True, slots=True)
class Campfire:
    """Campfire's `POST /coa/api/v1/invoice/{id}/void/` (the trailing slash is required)."""

    api_key: str = field(repr=False)

    name: ClassVar[str] = "campfire"
    has_drafts: ClassVar[bool] = False
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def authenticate(self, incoming: Incoming) -> Answer | None:
        header = incoming.headers.get("Authorization")
        if header is None:
            return _NO_CREDENTIALS
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "token":  # DRF ignores other schemes: as if no credentials
            return _NO_CREDENTIALS
        if token != self.api_key:
            return _BAD_TOKEN
        return None

    def unauthorized(self) -> Answer:
        return _BAD_TOKEN

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        header = incoming.headers.get("Authorization", "")
        return _detail(401, f"Invalid token: {header}.", Tally.AUTH_FAILED)

    def throttled(self, wait_s: float) -> Answer:
        return _detail(
            429,
            f"Request was throttled. Expected available in {whole_seconds(wait_s)} seconds.",
            Tally.THROTTLED,
        )

    def server_error(self, status: int) -> Answer:
        return _detail(status, "A server error occurred.", Tally.FAULT_ERROR)

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        if incoming.body.strip():
            try:
                payload = parse_json(incoming.body)
            except ValueError:
                return _BAD_JSON
        else:
            payload = {}
        void_date = _void_date(payload)
        if isinstance(void_date, Answer):
            return void_date
        invoice_id = incoming.params["invoice_id"]
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                voided = void_date or utc(incoming.wall).date().isoformat()
                return json_answer(200, _invoice(invoice_id, voided, incoming.wall), Tally.VOIDED)
            case InvoiceState.VOID:
                return _ALREADY_VOID
            case InvoiceState.MISSING:
                return _NOT_FOUND
            case _:
                return _PAID


def _invoice(invoice_id: str, voided_date: str, wall: float) -> dict[str, Any]:
    total = amount_cents(invoice_id) / 100
    return {
        "id": numeric_id(invoice_id),
        "invoice_number": f"INV-{invoice_id}",
        "status": "void",
        "payment_status": "void",
        "voided_date": voided_date,
        "invoice_date": "2024-01-09",
        "due_date": "2024-02-08",
        "currency": "USD",
        "total_amount": total,
        "amount_paid": 0,
        "amount_due": 0,
        "lines": [],
        "payments": [],
        "last_modified_at": utc(wall).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
