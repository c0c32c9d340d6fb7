"""Simulated ChargeOver: HTTP Basic auth, a `{}` JSON body, `{"code", "status", ...}` answers."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from batchvoid.providers.chargeover import SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, dump, parse_json
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, routes
from batchvoid.simulator.stats import Tally


def _body(code: int, message: str) -> bytes:
    ok = code == 200
    return dump(
        {
            "code": code,
            "status": "OK" if ok else "Error",
            "message": message,
            "details": {},
            "response": ok,
        }
    )


_MISSING_AUTH = Answer(
    401,
    _body(401, "Invalid or incorrect authorization [Missing (basic) authorization header.]"),
    Tally.AUTH_FAILED,
)
_BAD_AUTH = Answer(
    401, _body(401, "Invalid or incorrect authorization [Invalid credentials.]"), Tally.AUTH_FAILED
)
_BAD_BODY = Answer(400, _body(400, "Missing or invalid parameter."), Tally.REJECTED)
_VOIDED = Answer(200, _body(200, ""), Tally.VOIDED)
_ALREADY_VOID = Answer(400, _body(400, "Invoice is already void."), Tally.ALREADY_VOID)
_PAID = Answer(400, _body(400, "Cannot void a paid invoice."), Tally.REJECTED)
_NOT_FOUND = Answer(404, _body(404, "Invoice not found."), Tally.NOT_FOUND)
_THROTTLED = Answer(429, _body(429, "Rate limit exceeded."), Tally.THROTTLED)


@dataclass(frozen=True, slots=True)
class ChargeOver:
    """ChargeOver's `POST /api/v3/invoice/{id}/_action/void`. No idempotency."""

    username: str
    password: str = field(repr=False)

    name: ClassVar[str] = "chargeover"
    has_drafts: ClassVar[bool] = False
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def authenticate(self, incoming: Incoming) -> Answer | None:
        header = incoming.headers.get("Authorization")
        if header is None:
            return _MISSING_AUTH
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return _MISSING_AUTH
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return _BAD_AUTH
        username, _, password = decoded.partition(":")
        if username == self.username and password == self.password:
            return None
        return _BAD_AUTH

    def unauthorized(self) -> Answer:
        return _BAD_AUTH

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        header = incoming.headers.get("Authorization", "")
        _, _, token = header.partition(" ")
        try:
            pair = base64.b64decode(token.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            pair = "?"
        message = f"Invalid or incorrect authorization [Invalid credentials {pair} in {header!r}.]"
        return Answer(401, _body(401, message), Tally.AUTH_FAILED)

    def throttled(self, wait_s: float) -> Answer:
        return _THROTTLED

    def server_error(self, status: int) -> Answer:
        return Answer(status, _body(status, "Internal server error."), Tally.FAULT_ERROR)

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        try:
            payload = parse_json(incoming.body)
        except ValueError:
            return _BAD_BODY
        if not isinstance(payload, dict):
            return _BAD_BODY
        match book.void(self.name, incoming.params["invoice_id"]):
            case InvoiceState.OPEN:
                return _VOIDED
            case InvoiceState.VOID:
                return _ALREADY_VOID
            case InvoiceState.MISSING:
                return _NOT_FOUND
            case _:
                return _PAID
