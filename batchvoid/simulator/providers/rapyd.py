"""Simulated Rapyd: HMAC-signed requests, `idempotency` replay, `{"status": ...}` envelopes."""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from batchvoid.providers.rapyd import SPEC, TIMESTAMP_WINDOW_S, signature
from batchvoid.simulator.credentials import provider_url
from batchvoid.simulator.exchange import Action, Answer, Incoming, dump
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, routes
from batchvoid.simulator.stats import Tally

MAX_CLOCK_SKEW_S = TIMESTAMP_WINDOW_S  # documented, so shared
_IDEMPOTENCY_HEADER = SPEC.idempotency_header or "idempotency"
_SALT_LENGTHS = range(8, 17)
# Whitespace outside JSON strings: what the signed "body with no whitespace" leaves out.
_WHITESPACE_OUTSIDE_STRINGS = re.compile(r'("(?:\\.|[^"\\])*")|\s+')

_UNAUTHENTICATED = (
    "UNAUTHENTICATED_API_CALL",
    "The request was rejected due to an authentication issue. Corrective action: Check the"
    " status of your account in the 'Account Details' page of the Client Portal.",
)
_INVALID_INVOICE_ID = (
    "INVALID_INVOICE_ID",
    "The request attempted an operation that requires an invoice, but the invoice was not"
    " found. The request was rejected. Corrective action: Use the ID of a valid invoice.",
)
_NOT_VOIDABLE = (
    "ERROR_VOID_NOT_UNCOLLECTIBLE_OR_OPEN_INVOICE",
    "The request tried to void an invoice, but the invoice is not open or uncollectible. The"
    " request was rejected. Corrective action: Void only an open or uncollectible invoice.",
)
_TOO_MANY_REQUESTS = (
    "TOO_MANY_REQUESTS",
    "The request was rejected because too many requests were sent. Corrective action: Wait"
    " and retry the request.",
)
_INTERNAL_ERROR = (
    "INTERNAL_ERROR",
    "The request failed because of an internal error. Corrective action: Retry the request.",
)


def signed_body(body: bytes) -> str:
    """The body as Rapyd signs it: JSON without whitespace; `""` for no body or `{}`."""
    text = _WHITESPACE_OUTSIDE_STRINGS.sub(lambda match: match.group(1) or "", body.decode(errors="replace"))
    return "" if text == "{}" else text


def _envelope(code: str, message: str, data: Mapping[str, Any] | None = None) -> bytes:
    payload: dict[str, Any] = {
        "status": {
            "error_code": code,
            "status": "ERROR" if code else "SUCCESS",
            "message": message,
            "response_code": code,
            "operation_id": str(uuid.uuid4()),
        }
    }
    if data is not None:
        payload["data"] = data
    return dump(payload)


def _error(status: int, error: tuple[str, str], tally: Tally) -> Answer:
    return Answer(status, _envelope(*error), tally)


def _invoice(invoice_id: str, state: InvoiceState) -> dict[str, Any]:
    total = amount_cents(invoice_id) / 100
    return {
        "id": invoice_id,
        "status": state.value,
        "billing": "pay_automatically",
        "currency": "USD",
        "customer": "cus_simulator",
        "created_at": 1701849092,
        "due_date": 1704441092,
        "metadata": {},
        "number": 0,
        "subtotal": total,
        "tax": 0,
        "total": total,
        "type": "payment",
    }


@dataclass(frozen=True, slots=True)
class Rapyd:
    """Rapyd's `POST /v1/invoices/{id}/void` and `GET /v1/invoices/{id}`."""

    access_key: str
    secret_key: str = field(repr=False)

    name: ClassVar[str] = "rapyd"
    has_drafts: ClassVar[bool] = True
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def authenticate(self, incoming: Incoming) -> Answer | None:
        headers = incoming.headers
        access_key = headers.get("access_key")
        salt = headers.get("salt")
        timestamp = headers.get("timestamp")
        sent = headers.get("signature")
        if access_key != self.access_key or salt is None or timestamp is None or sent is None:
            return self.unauthorized()
        if len(salt) not in _SALT_LENGTHS:
            return self.unauthorized()
        try:
            seconds = int(timestamp)
        except ValueError:
            return self.unauthorized()
        if abs(incoming.wall - seconds) > MAX_CLOCK_SKEW_S:
            return self.unauthorized()
        expected = signature(
            method=incoming.method,
            path=incoming.raw_path.removeprefix(provider_url("", self.name)),  # signed from /v1
            salt=salt,
            timestamp=seconds,
            access_key=access_key,
            secret_key=self.secret_key,
            body=signed_body(incoming.body),
        )
        if hmac.compare_digest(expected.encode(), sent.encode(errors="surrogateescape")):
            return None
        return self.unauthorized()

    def unauthorized(self) -> Answer:
        return _error(401, _UNAUTHENTICATED, Tally.AUTH_FAILED)

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        headers = incoming.headers
        message = (
            f"The request was rejected due to an authentication issue: access_key "
            f"{headers.get('access_key')}, salt {headers.get('salt')}, signature {headers.get('signature')}."
        )
        return _error(401, (_UNAUTHENTICATED[0], message), Tally.AUTH_FAILED)

    def throttled(self, wait_s: float) -> Answer:
        return _error(429, _TOO_MANY_REQUESTS, Tally.THROTTLED)

    def server_error(self, status: int) -> Answer:
        if status == 502:  # the gateway in front of Rapyd answers, not Rapyd
            return Answer(502, b"502 Bad Gateway", Tally.FAULT_ERROR, "text/plain")
        return _error(status, _INTERNAL_ERROR, Tally.FAULT_ERROR)

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        invoice_id = incoming.params["invoice_id"]
        if action is Action.LOOKUP:
            state = book.state(self.name, invoice_id)
            if state is InvoiceState.MISSING:
                return _error(400, _INVALID_INVOICE_ID, Tally.LOOKUPS)
            return Answer(200, _envelope("", "", _invoice(invoice_id, state)), Tally.LOOKUPS)
        key = incoming.headers.get(_IDEMPOTENCY_HEADER)
        if key:
            stored = replays.get(key)
            if stored is not None:
                return stored.answer.counted_as(Tally.IDEMPOTENT_REPLAYS)
            return replays.keep(key, incoming.raw_path, self._void(invoice_id, book))
        return self._void(invoice_id, book)

    def _void(self, invoice_id: str, book: InvoiceBook) -> Answer:
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                data = _invoice(invoice_id, InvoiceState.VOID)
                return Answer(200, _envelope("", "", data), Tally.VOIDED)
            case InvoiceState.MISSING:
                return _error(400, _INVALID_INVOICE_ID, Tally.NOT_FOUND)
            case InvoiceState.VOID:
                return _error(400, _NOT_VOIDABLE, Tally.ALREADY_VOID)
            case _:
                return _error(400, _NOT_VOIDABLE, Tally.REJECTED)
