"""Simulated Chargebee (one site): Basic auth with the API key, a form-encoded void with an
optional `void_reason_code` and `comment`, `chargebee-idempotency-key` replayed for 30 minutes.

Chargebee documents no answer to voiding a voided, paid or pending invoice; this simulator
answers all three with the state-conflict error its spec declares, a 409
`invalid_state_for_request`, so only a read can tell them apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import parse_qs

from batchvoid.providers.chargebee import COMMENT, IDEMPOTENCY, REASON, SPEC
from batchvoid.simulator.exchange import Action, Answer, Incoming, json_answer
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook, InvoiceState
from batchvoid.simulator.providers.base import Route, amount_cents, basic_login, routes
from batchvoid.simulator.stats import Tally

REPLAY_WINDOW_S = 30 * 60
# The reason codes set up on the simulated site (Settings > Reason Codes > Invoices > Void invoice).
REASON_CODES = frozenset({"duplicate", "billing_error", "other"})
_STATUS = MappingProxyType(
    {
        InvoiceState.OPEN: "payment_due",
        InvoiceState.PAID: "paid",
        InvoiceState.VOID: "voided",
        InvoiceState.DRAFT: "pending",
    }
)


def _error(
    status: int, code: str, message: str, tally: Tally, *, error_type: str | None = None, param: str = ""
) -> Answer:
    payload: dict[str, Any] = {"message": message, "api_error_code": code, "http_status_code": status}
    if error_type is not None:
        payload["type"] = error_type
    if param:
        payload["param"] = param
    payload["error_code"] = code
    return json_answer(status, payload, tally)


_UNAUTHORIZED = _error(
    401, "api_authentication_failed", "Sorry, authentication failed. Invalid api key", Tally.AUTH_FAILED
)
_THROTTLED = _error(
    429,
    "api_request_limit_exceeded",
    "Sorry, access has been blocked temporarily due to request count exceeding acceptable limits. "
    "Please try after some time.",
    Tally.THROTTLED,
)
_KEY_TOO_LONG = _error(
    400,
    "param_wrong_value",
    f"{IDEMPOTENCY.header} : cannot be longer than {IDEMPOTENCY.max_length} characters.",
    Tally.REJECTED,
    error_type="invalid_request",
    param=IDEMPOTENCY.header,
)
_KEY_REUSED = _error(
    409,
    "duplicate_entry",
    "The idempotency key was already used with different parameters.",
    Tally.REJECTED,
    error_type="invalid_request",
)
_NOT_FORM = _error(
    400,
    "invalid_request",
    "The request body must be application/x-www-form-urlencoded.",
    Tally.REJECTED,
    error_type="invalid_request",
)
_REPLAYED: Mapping[str, str] = MappingProxyType({"chargebee-idempotency-replayed": "true"})


def _not_found(invoice_id: str, tally: Tally) -> Answer:
    message = f"Sorry, we couldn't find that resource: invoice {invoice_id} not found."
    return _error(404, "resource_not_found", message, tally, error_type="invalid_request")


def _invalid_state(status: str, tally: Tally) -> Answer:
    message = f"Invoice cannot be voided as it is in {status} state."
    return _error(409, "invalid_state_for_request", message, tally, error_type="invalid_request")


def _invoice(invoice_id: str, status: str, wall: float, form: Mapping[str, str]) -> dict[str, Any]:
    invoice: dict[str, Any] = {
        "id": invoice_id,
        "customer_id": "sim_customer",
        "status": status,
        "total": amount_cents(invoice_id),
        "currency_code": "USD",
        "price_type": "tax_exclusive",
        "recurring": False,
        "deleted": False,
        "object": "invoice",
    }
    if status == "voided":
        invoice["voided_at"] = int(wall)
        if REASON.name in form:
            invoice[REASON.name] = form[REASON.name]
    return {"invoice": invoice}


def _form(incoming: Incoming) -> dict[str, str] | Answer:
    """The void's form fields, or the 400 saying what is wrong with them."""
    content_type = incoming.headers.get("Content-Type", "").split(";")[0].strip()
    if incoming.body and content_type != "application/x-www-form-urlencoded":
        return _NOT_FORM
    try:
        parsed = parse_qs(incoming.body.decode(), keep_blank_values=True, strict_parsing=bool(incoming.body))
    except (UnicodeDecodeError, ValueError):
        return _NOT_FORM
    form = {name: values[-1] for name, values in parsed.items()}
    for name in form:
        if name not in (REASON.name, COMMENT.name):
            return _param(name, f"{name} : is not a parameter of this operation.")
    if REASON.name in form and form[REASON.name] not in REASON_CODES:
        return _param(REASON.name, f"{REASON.name} : invalid reason code {form[REASON.name]!r}.")
    limit = COMMENT.max_length or 0
    if len(form.get(COMMENT.name, "")) > limit:
        return _param(COMMENT.name, f"{COMMENT.name} : cannot be longer than {limit} characters.")
    return form


def _param(name: str, message: str) -> Answer:
    return _error(400, "param_wrong_value", message, Tally.REJECTED, error_type="invalid_request", param=name)


@dataclass(frozen=True, slots=True)
class Chargebee:
    """Chargebee's `POST /api/v2/invoices/{id}/void` and `GET /api/v2/invoices/{id}`."""

    api_key: str = field(repr=False)

    name: ClassVar[str] = "chargebee"
    has_drafts: ClassVar[bool] = True  # `pending` invoices
    routes: ClassVar[Sequence[Route]] = routes(SPEC)

    def _key(self, incoming: Incoming) -> str:
        return basic_login(incoming)[0]

    def authenticate(self, incoming: Incoming) -> Answer | None:
        return None if self._key(incoming) == self.api_key else _UNAUTHORIZED

    def unauthorized(self) -> Answer:
        return _UNAUTHORIZED

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        message = f"Sorry, authentication failed. Invalid api key {self._key(incoming)}"
        return _error(401, "api_authentication_failed", message, Tally.AUTH_FAILED)

    def throttled(self, wait_s: float) -> Answer:
        return _THROTTLED

    def server_error(self, status: int) -> Answer:
        if status == 503:
            message = "Sorry, the server is temporarily unavailable. Please try after some time."
            return _error(503, "internal_temporary_error", message, Tally.FAULT_ERROR)
        message = "Sorry, something went wrong when trying to process the request."
        return _error(status, "internal_error", message, Tally.FAULT_ERROR, error_type="operation_failed")

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        invoice_id = incoming.params["invoice_id"]
        if action is Action.LOOKUP:
            state = book.state(self.name, invoice_id)
            if state is InvoiceState.MISSING:
                return _not_found(invoice_id, Tally.LOOKUPS)
            return json_answer(200, _invoice(invoice_id, _STATUS[state], incoming.wall, {}), Tally.LOOKUPS)
        key = incoming.headers.get(IDEMPOTENCY.header)
        if not key:
            return self._void(invoice_id, incoming, book)
        if len(key) > (IDEMPOTENCY.max_length or len(key)):
            return _KEY_TOO_LONG
        fingerprint = f"{incoming.raw_path}?{incoming.body!r}"
        stored = replays.get(key, now=incoming.wall, ttl_s=REPLAY_WINDOW_S)
        if stored is None:
            answer = self._void(invoice_id, incoming, book)
            return replays.keep(key, fingerprint, answer, at=incoming.wall)
        if stored.fingerprint != fingerprint:
            return _KEY_REUSED
        return stored.answer.with_headers(_REPLAYED).counted_as(Tally.IDEMPOTENT_REPLAYS)

    def _void(self, invoice_id: str, incoming: Incoming, book: InvoiceBook) -> Answer:
        form = _form(incoming)
        if isinstance(form, Answer):
            return form
        match book.void(self.name, invoice_id):
            case InvoiceState.OPEN:
                return json_answer(200, _invoice(invoice_id, "voided", incoming.wall, form), Tally.VOIDED)
            case InvoiceState.MISSING:
                return _not_found(invoice_id, Tally.NOT_FOUND)
            case InvoiceState.VOID:
                return _invalid_state("voided", Tally.ALREADY_VOID)
            case state:
                return _invalid_state(_STATUS[state], Tally.REJECTED)
