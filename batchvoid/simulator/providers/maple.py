"""Simulated Maple Billing: Bearer auth, companies, `Idempotency-Key` replay and conflicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from batchvoid.providers.maple import COMPANY, IDEMPOTENCY, SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, json_answer
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, routes, utc
from batchvoid.simulator.stats import Tally

MAX_IDEMPOTENCY_KEY_LENGTH = IDEMPOTENCY.max_length or 0
_COMPANY_PREFIX = COMPANY.prefix or ""
_SERVER_ERRORS: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        500: ("Internal server error", "internal_error"),
        502: ("Bad gateway", "bad_gateway"),
        503: ("Service unavailable", "service_unavailable"),
    }
)


def _error(status: int, message: str, error_type: str, code: str, tally: Tally) -> Answer:
    return json_answer(
        status,
        {
            "error_message": message,
            "error_type": error_type,
            "error_code": code,
            "error_status": status,
        },
        tally,
    )


_UNAUTHORIZED = _error(401, "Invalid API token", "authentication_error", "unauthorized", Tally.AUTH_FAILED)
_NO_COMPANY = _error(404, "Company not found", "not_found", "company_not_found", Tally.REJECTED)
_KEY_TOO_LONG = _error(
    400,
    f"{IDEMPOTENCY.header} must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
    "invalid_request",
    "idempotency_key_too_long",
    Tally.REJECTED,
)
_KEY_CONFLICT = _error(
    409,
    "Idempotency key reused with a different request",
    "idempotency_error",
    "idempotency_conflict",
    Tally.REJECTED,
)
_NOT_FOUND = _error(404, "Invoice not found", "not_found", "invoice_not_found", Tally.NOT_FOUND)
_ALREADY_VOID = _error(
    400, "Invoice is already void", "invalid_request", "invoice_already_void", Tally.ALREADY_VOID
)
_THROTTLED = _error(429, "Rate limit exceeded", "rate_limit_error", "rate_limited", Tally.THROTTLED)
_REPLAYED: Mapping[str, str] = MappingProxyType({"Idempotency-Used": "true"})


def _not_voidable(status_name: str) -> Answer:
    return _error(
        400,
        f"Invoice with status {status_name} cannot be voided",
        "invalid_request",
        "invoice_not_voidable",
        Tally.REJECTED,
    )


_PAID = _not_voidable("PAID")
_DRAFT = _not_voidable("DRAFT")


def _money(cents: int) -> dict[str, Any]:
    return {"currency": "USD", "value_in_cents": cents}


def _invoice(invoice_id: str, wall: float) -> dict[str, Any]:
    total = amount_cents(invoice_id)
    return {
        "uuid": invoice_id,
        "status": "VOID",
        "number": f"INV-{invoice_id}",
        "name": "Simulated invoice",
        "currency": "USD",
        "customer_id": "cus_simulator",
        "billed_customer_id": "cus_simulator",
        "auto_charges": False,
        "total": _money(total),
        "sub_total": _money(total),
        "due": _money(0),
        "paid": _money(0),
        "prorated_amount": _money(0),
        "invoice_date": "2024-01-09T19:33:11Z",
        "due_date": "2024-02-08T19:33:11Z",
        "paid_date": None,
        "hosted_link": None,
        "pdf_link": None,
        "subscription_id": None,
        "created_at": "2024-01-09T19:33:11Z",
        "updated_at": utc(wall).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@dataclass(frozen=True, slots=True)
class Maple:
    """Maple's `POST /api/v1/companies/{company_id}/invoices/{id}/void`; every `cmp_` company
    is the simulator's (the prefix from its facts)."""

    api_token: str = field(repr=False)

    name: ClassVar[str] = "maple"
    has_drafts: ClassVar[bool] = True
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def authenticate(self, incoming: Incoming) -> Answer | None:
        if incoming.headers.get("Authorization") == f"Bearer {self.api_token}":
            return None
        return _UNAUTHORIZED

    def unauthorized(self) -> Answer:
        return _UNAUTHORIZED

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        token = incoming.headers.get("Authorization", "").removeprefix("Bearer ")
        return _error(
            401, f"Invalid API token {token}", "authentication_error", "unauthorized", Tally.AUTH_FAILED
        )

    def throttled(self, wait_s: float) -> Answer:
        return _THROTTLED

    def server_error(self, status: int) -> Answer:
        message, code = _SERVER_ERRORS.get(status, _SERVER_ERRORS[500])
        return _error(status, message, "api_error", code, Tally.FAULT_ERROR)

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        key = incoming.headers.get(IDEMPOTENCY.header)
        if not key:
            return self._void(incoming, book)
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            return _KEY_TOO_LONG
        params = incoming.params
        fingerprint = f"{params['company_id']}/{params['invoice_id']}"
        stored = replays.get(key)
        if stored is None:
            return replays.keep(key, fingerprint, self._void(incoming, book))
        if stored.fingerprint != fingerprint:
            return _KEY_CONFLICT
        return stored.answer.with_headers(_REPLAYED).counted_as(Tally.IDEMPOTENT_REPLAYS)

    def _void(self, incoming: Incoming, book: InvoiceBook) -> Answer:
        if not incoming.params["company_id"].startswith(_COMPANY_PREFIX):
            return _NO_COMPANY
        invoice_id = incoming.params["invoice_id"]
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                return json_answer(200, _invoice(invoice_id, incoming.wall), Tally.VOIDED)
            case InvoiceState.VOID:
                return _ALREADY_VOID
            case InvoiceState.MISSING:
                return _NOT_FOUND
            case InvoiceState.DRAFT:
                return _DRAFT
            case _:
                return _PAID
