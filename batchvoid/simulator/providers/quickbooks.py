"""Simulated QuickBooks Online: OAuth 2.0 bearer tokens, realms, SyncTokens, `requestid` replay.

An invoice's SyncToken starts at "0" and goes up by one with every change: the void, and each
`stale_rate` fault, which plays a payment landing between the client's read and its void
(the void then gets code 5010, Stale Object Error). A voided invoice is zeroed with "Voided"
prepended to its PrivateNote, as Intuit documents. A `requestid` seen before gets the answer
it got first, whatever the request (Intuit's replay, pitfall included). The 401, 403, paid and
not-found bodies are this simulator's (the facts give the Fault shape, not their words).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from batchvoid.providers.quickbooks import IDEMPOTENCY, SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, json_answer, parse_json
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, routes
from batchvoid.simulator.stats import Tally

_MAX_REQUEST_ID = IDEMPOTENCY.max_length or 50
_TIME = "2026-11-30T10:00:00.000-08:00"


def _fault(
    status: int, message: str, detail: str, code: str, tally: Tally, kind: str = "ValidationFault"
) -> Answer:
    error = {"Message": message, "Detail": detail, "code": code, "element": ""}
    return json_answer(status, {"Fault": {"Error": [error], "type": kind}, "time": _TIME}, tally)


def _unauthorized(detail: str) -> Answer:
    error = {
        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        "detail": detail,
        "code": "3200",
    }
    payload = {
        "warnings": None,
        "intuitObject": None,
        "fault": {"error": [error], "type": "AUTHENTICATION"},
        "time": _TIME,
    }
    return json_answer(401, payload, Tally.AUTH_FAILED)


_UNAUTHORIZED = _unauthorized("Token expired or invalid")
_FORBIDDEN = _fault(
    403,
    "ApplicationAuthorizationFailed",
    "This realm is not connected to the app",
    "003100",
    Tally.AUTH_FAILED,
    "AuthorizationFault",
)
_THROTTLED = _fault(
    429,
    "ThrottleExceeded",
    "message=ThrottleExceeded; errorCode=003001; statusCode=429",
    "003001",
    Tally.THROTTLED,
    "SERVICE",
)


def _not_found(invoice_id: str, tally: Tally) -> Answer:
    detail = (
        "Object Not Found : Something you're trying to use has been made inactive or does not "
        f"exist (Invoice {invoice_id})."
    )
    return _fault(400, "Object Not Found", detail, "610", tally)


_STALE = _fault(
    400,
    "Stale Object Error",
    "Stale Object Error : You and another user were working on the same thing. Please try again.",
    "5010",
    Tally.REJECTED,
)
_PAID = _fault(
    400,
    "Business Validation Error",
    "This invoice has a payment applied to it: remove the payment before you void it.",
    "6540",
    Tally.REJECTED,
)


@dataclass(frozen=True, slots=True)
class QuickBooks:
    """Intuit's `GET .../invoice/{id}` and `POST .../invoice?operation=void`, and its token endpoint."""

    client_id: str
    client_secret: str
    realm_id: str
    stale_rate: float = 0.0
    seed: int | None = None
    _sync: dict[str, int] = field(default_factory=dict, repr=False)  # invoice id -> changes so far
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    name: ClassVar[str] = "quickbooks"
    has_drafts: ClassVar[bool] = False  # there are no drafts in QuickBooks Online
    routes: ClassVar[Sequence[Route]] = routes(SPEC)
    token_prefix: ClassVar[str] = "sim_qbo"  # noqa: S105 - in the tokens it issues
    token_lifetime_s: ClassVar[float] = 3600  # documented: 1 hour

    def reset(self) -> None:
        self._sync.clear()
        self._rng.seed(self.seed)

    def authenticate(self, incoming: Incoming) -> Answer | None:
        if incoming.params.get("realm_id") != self.realm_id:
            return _FORBIDDEN
        return None

    def unauthorized(self) -> Answer:
        return _UNAUTHORIZED

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        return _unauthorized(f"Token {incoming.headers.get('Authorization', '')} expired or invalid")

    def throttled(self, wait_s: float) -> Answer:
        return _THROTTLED

    def server_error(self, status: int) -> Answer:
        return _fault(
            status,
            "An application error has occurred",
            "Internal Server Error",
            "10000",
            Tally.FAULT_ERROR,
            "SystemFault",
        )

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        if action is Action.LOOKUP:
            invoice_id = incoming.params["invoice_id"]
            state = book.state(self.name, invoice_id)
            if state is InvoiceState.MISSING:
                return _not_found(invoice_id, Tally.LOOKUPS)
            return self._invoice(invoice_id, state, Tally.LOOKUPS)
        query = parse_qs(urlsplit(incoming.raw_path).query)
        if query.get("operation") != ["void"]:
            return _fault(
                400,
                "Request has invalid or unsupported property",
                "operation=void is required here",
                "2010",
                Tally.REJECTED,
            )
        request_id = query.get(IDEMPOTENCY.header, [""])[0]
        if len(request_id) > _MAX_REQUEST_ID:
            return _fault(
                400,
                "Invalid requestid",
                f"requestid is longer than {_MAX_REQUEST_ID} characters",
                "2500",
                Tally.REJECTED,
            )
        if request_id:
            stored = replays.get(request_id)
            if stored is not None:
                return stored.answer.counted_as(Tally.IDEMPOTENT_REPLAYS)
            return replays.keep(request_id, incoming.raw_path, self._void(incoming.body, book))
        return self._void(incoming.body, book)

    def _void(self, body: bytes, book: InvoiceBook) -> Answer:
        try:
            payload = parse_json(body)
        except ValueError:
            return _fault(
                400,
                "Request has invalid or unsupported property",
                "The body is not JSON",
                "2010",
                Tally.REJECTED,
            )
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("Id"), str)
            or not isinstance(payload.get("SyncToken"), str)
        ):
            return _fault(
                400,
                "Required param missing, need to supply the required value for the API",
                "Id and SyncToken are required",
                "2020",
                Tally.REJECTED,
            )
        invoice_id = payload["Id"]
        state = book.state(self.name, invoice_id)
        if state is InvoiceState.MISSING:
            book.void(self.name, invoice_id)  # changes nothing; counted as a void the book saw
            return _not_found(invoice_id, Tally.NOT_FOUND)
        if payload["SyncToken"] != self._token(invoice_id, state):
            return _STALE
        if self.stale_rate and self._rng.random() < self.stale_rate:  # a payment, say, lands first
            self._sync[invoice_id] = self._sync.get(invoice_id, 0) + 1
            return _STALE
        before = book.void(self.name, invoice_id)
        if before is InvoiceState.OPEN:
            self._sync[invoice_id] = self._sync.get(invoice_id, 0) + 1
            return self._invoice(invoice_id, InvoiceState.VOID, Tally.VOIDED)
        if before is InvoiceState.VOID:  # not documented by Intuit; its SyncToken moved on when voided
            return _STALE.counted_as(Tally.ALREADY_VOID)
        return _PAID

    def _token(self, invoice_id: str, state: InvoiceState) -> str:
        """The invoice's SyncToken: its changes so far (one, for an invoice void from the start)."""
        return str(self._sync.get(invoice_id, 1 if state is InvoiceState.VOID else 0))

    def _invoice(self, invoice_id: str, state: InvoiceState, tally: Tally) -> Answer:
        total = amount_cents(invoice_id) / 100
        void = state is InvoiceState.VOID
        invoice: dict[str, Any] = {
            "Id": invoice_id,
            "SyncToken": self._token(invoice_id, state),
            "DocNumber": f"{invoice_id[:21]}",
            "TotalAmt": 0 if void else total,
            "Balance": 0 if void or state is InvoiceState.PAID else total,
            "PrivateNote": "Voided" if void else "",
            "CurrencyRef": {"value": "USD"},
        }
        return json_answer(200, {"Invoice": invoice, "time": _TIME}, tally)
