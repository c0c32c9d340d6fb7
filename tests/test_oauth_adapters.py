"""Xero and QuickBooks adapters, sans-IO: the exact requests, and the outcome of every documented answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from batchvoid.models import Item, Outcome, OutcomeKind, Response
from batchvoid.providers.quickbooks import QuickBooks, is_voided, request_id
from batchvoid.providers.xero import Xero

KEY = "bv1-0123456789abcdef0123456789abcdef0123456789abcdef"
XERO_ID = "a03ffcd2-5d91-4c7e-b483-318584e9e439"
TENANT = "00000000-0000-4000-8000-00000000a11c"


@dataclass
class Token:
    access_token: str = "at-1"
    secrets: tuple[str, ...] = ("at-1", "client-secret")


def answer(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, dict(headers or {}), raw)


def xero_invoice(status: str) -> dict[str, Any]:
    return {"Id": "x", "Status": "OK", "Invoices": [{"InvoiceID": XERO_ID, "Status": status}]}


def validation(message: str) -> dict[str, Any]:
    return {
        "ErrorNumber": 10,
        "Type": "ValidationException",
        "Message": "A validation exception occurred",
        "Elements": [{"ValidationErrors": [{"Message": message}]}],
    }


XERO = Xero("https://api.xero.com", Token(), TENANT)
ITEM = Item(3, "xero", XERO_ID)


def test_xero_void_is_a_post_of_status_voided_with_tenant_and_idempotency_key() -> None:
    """Xero: POST /api.xro/2.0/Invoices/{id}, the two-field body, Bearer, xero-tenant-id, Idempotency-Key."""
    request = XERO.void_request(ITEM, KEY)
    assert request.method == "POST"
    assert request.url == f"https://api.xero.com/api.xro/2.0/Invoices/{XERO_ID}"
    assert request.headers == {
        "Authorization": "Bearer at-1",
        "xero-tenant-id": TENANT,
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Idempotency-Key": KEY,
    }
    assert json.loads(request.body or b"") == {"Invoices": [{"InvoiceID": XERO_ID, "Status": "VOIDED"}]}
    assert request.secrets == ("at-1", "client-secret")
    assert XERO.void_request(ITEM, KEY).headers == request.headers  # the same key on every attempt


def test_xero_lookup_reads_the_invoice() -> None:
    """The read that settles a ValidationException: GET the same path, no body, no idempotency key."""
    request = XERO.lookup_request(ITEM)
    assert request is not None
    assert (request.method, request.url, request.body) == ("GET", XERO.void_request(ITEM, KEY).url, None)
    assert "Idempotency-Key" not in request.headers
    assert request.headers["xero-tenant-id"] == TENANT


VALIDATION = answer(400, validation("Invoice not of valid status for modification"))


@pytest.mark.parametrize(
    ("response", "kind", "check", "reason"),
    [
        (answer(200, xero_invoice("VOIDED")), OutcomeKind.VOIDED, False, ""),
        (
            answer(200, xero_invoice("AUTHORISED")),
            OutcomeKind.REJECTED,
            False,
            "answered 200 but the invoice status is 'AUTHORISED'",
        ),
        (VALIDATION, OutcomeKind.REJECTED, True, "HTTP 400: Invoice not of valid status for modification"),
        (
            answer(
                400,
                validation(
                    "This document cannot be edited as it has a payment or credit note allocated to it."
                ),
            ),
            OutcomeKind.REJECTED,
            True,
            "HTTP 400: This document cannot be edited as it has a payment or credit note allocated to it.",
        ),
        (
            answer(404, b"The resource you're looking for cannot be found"),
            OutcomeKind.REJECTED,
            False,
            "HTTP 404: The resource",
        ),
        (
            answer(401, {"Title": "Unauthorized", "Detail": "TokenExpired"}),
            OutcomeKind.AUTH_FAILED,
            False,
            "HTTP 401: TokenExpired",
        ),
        (
            answer(403, {"Title": "Forbidden", "Detail": "AuthorizationUnsuccessful"}),
            OutcomeKind.AUTH_FAILED,
            False,
            "HTTP 403",
        ),
        (
            answer(429, {}, {"Retry-After": "37", "X-Rate-Limit-Problem": "day"}),
            OutcomeKind.THROTTLED,
            False,
            "HTTP 429: rate limit reached (day)",
        ),
        (answer(503, {"Title": "Service Unavailable"}), OutcomeKind.RETRYABLE, False, "HTTP 503"),
    ],
)
def test_xero_answers(response: Response, kind: OutcomeKind, check: bool, reason: str) -> None:
    """Every documented Xero answer to a void has its outcome; a ValidationException asks for a read."""
    outcome = XERO.parse_void(ITEM, response)
    assert outcome.kind is kind
    assert outcome.check_status is check
    assert outcome.reason.startswith(reason)
    if response.status == 429:
        assert outcome.retry_after == 37


@pytest.mark.parametrize(
    ("status", "kind", "says"),
    [
        ("VOIDED", OutcomeKind.ALREADY_VOID, ""),
        ("DRAFT", OutcomeKind.REJECTED, "(invoice status: DRAFT): Xero voids only approved (AUTHORISED)"),
        ("SUBMITTED", OutcomeKind.REJECTED, "a draft or submitted one cannot be voided, only deleted"),
        ("PAID", OutcomeKind.REJECTED, "(invoice status: PAID)"),
    ],
)
def test_xero_read_confirms_already_void_and_says_a_draft_is_not_voidable(
    status: str, kind: OutcomeKind, says: str
) -> None:
    """After the ValidationException, the invoice's Status decides: VOIDED is already void, DRAFT says it cannot be voided."""
    rejected = XERO.parse_void(ITEM, VALIDATION)
    outcome = XERO.parse_lookup(ITEM, answer(200, xero_invoice(status)), rejected)
    assert outcome.kind is kind
    assert not outcome.check_status
    assert says in outcome.reason
    failed_read = XERO.parse_lookup(ITEM, answer(503, {}), rejected)
    assert failed_read.kind is OutcomeKind.RETRYABLE  # the void is sent again, with the same key


# QuickBooks Online.

REALM = "9130350000000001"
QBO = QuickBooks("https://quickbooks.api.intuit.com", Token(), REALM)
QITEM = Item(4, "quickbooks", "130")


def qbo_invoice(sync: str, *, voided: bool = False, paid: bool = False) -> dict[str, Any]:
    total = 0 if voided else 100.0
    return {
        "Invoice": {
            "Id": "130",
            "SyncToken": sync,
            "TotalAmt": total,
            "Balance": 0 if voided or paid else total,
            "PrivateNote": "Voided" if voided else "",
        },
        "time": "2026-11-30T10:00:00.000-08:00",
    }


def fault(code: str, message: str, detail: str = "") -> dict[str, Any]:
    return {
        "Fault": {"Error": [{"Message": message, "Detail": detail, "code": code}], "type": "ValidationFault"}
    }


def test_quickbooks_reads_the_invoice_then_voids_it_at_its_sync_token() -> None:
    """QuickBooks: GET the invoice, then POST ?operation=void&requestid=... with {"Id", "SyncToken"}."""
    read = QBO.read_request(QITEM)
    assert read is not None
    assert (read.method, read.url, read.body) == (
        "GET",
        f"https://quickbooks.api.intuit.com/v3/company/{REALM}/invoice/130",
        None,
    )
    assert read.headers == {"Authorization": "Bearer at-1", "Accept": "application/json"}
    told = QBO.parse_read(QITEM, answer(200, qbo_invoice("3")))
    assert isinstance(told, Item)
    assert QBO.read_request(told) is None  # read for this void: the void goes next
    void = QBO.void_request(told, KEY)
    url = urlsplit(void.url)
    assert (void.method, url.path) == ("POST", f"/v3/company/{REALM}/invoice")
    assert parse_qs(url.query) == {"operation": ["void"], "requestid": [request_id(KEY, "3")]}
    assert void.headers == {
        "Authorization": "Bearer at-1",
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    assert json.loads(void.body or b"") == {"Id": "130", "SyncToken": "3"}
    assert void.secrets == ("at-1", "client-secret")


def test_the_request_id_is_stable_per_sync_token_and_new_when_it_changes() -> None:
    """requestid: the same for every attempt and run at one SyncToken (<= 50 chars), another after a change."""
    first = request_id(KEY, "3")
    assert first == request_id(KEY, "3")
    assert len(first) <= 50
    assert request_id(KEY, "4") != first
    assert request_id(KEY.replace("0", "1"), "3") != first  # another invoice (another key)
    told = QBO.parse_read(QITEM, answer(200, qbo_invoice("3")))
    assert isinstance(told, Item)
    assert request_id(KEY, "3") in QBO.void_request(told, KEY).url


@pytest.mark.parametrize(
    ("response", "kind", "says"),
    [
        (answer(200, qbo_invoice("2", voided=True)), OutcomeKind.ALREADY_VOID, ""),
        (
            answer(400, fault("610", "Object Not Found", "Object Not Found : Invoice 130")),
            OutcomeKind.REJECTED,
            "HTTP 400: Object Not Found",
        ),
        (
            answer(401, {"fault": {"error": [{"message": "AuthenticationFailed", "code": "3200"}]}}),
            OutcomeKind.AUTH_FAILED,
            "AuthenticationFailed",
        ),
        (answer(429, fault("003001", "ThrottleExceeded")), OutcomeKind.THROTTLED, "ThrottleExceeded"),
        (
            answer(500, fault("10000", "An application error has occurred")),
            OutcomeKind.RETRYABLE,
            "invoice read: HTTP 500",
        ),
        (answer(200, {"Invoice": {"Id": "130"}}), OutcomeKind.REJECTED, "no SyncToken"),
    ],
)
def test_quickbooks_read_answers(response: Response, kind: OutcomeKind, says: str) -> None:
    """The read settles a voided invoice (already void, no void sent), a missing one, auth, throttling, errors."""
    outcome = QBO.parse_read(QITEM, response)
    assert isinstance(outcome, Outcome)
    assert outcome.kind is kind
    assert says in outcome.reason


@pytest.mark.parametrize(
    ("response", "kind", "says"),
    [
        (answer(200, qbo_invoice("4", voided=True)), OutcomeKind.VOIDED, ""),
        (answer(200, qbo_invoice("4")), OutcomeKind.REJECTED, "answered 200 but the invoice is not voided"),
        (
            answer(400, fault("5010", "Stale Object Error")),
            OutcomeKind.RETRYABLE,
            "changed since it was read",
        ),
        (
            answer(400, fault("6540", "Business Validation Error", "payment applied")),
            OutcomeKind.REJECTED,
            "payment applied (code 6540)",
        ),
        (answer(401, fault("3200", "AuthenticationFailed")), OutcomeKind.AUTH_FAILED, ""),
        (answer(429, fault("003001", "ThrottleExceeded")), OutcomeKind.THROTTLED, ""),
        (answer(503, b"<html>unavailable</html>"), OutcomeKind.RETRYABLE, ""),
    ],
)
def test_quickbooks_void_answers(response: Response, kind: OutcomeKind, says: str) -> None:
    """Every answer to the void has its outcome; a stale SyncToken (5010) reads again rather than failing."""
    outcome = QBO.parse_void(QITEM, response)
    assert outcome.kind is kind
    assert says in outcome.reason


def test_a_voided_quickbooks_invoice_is_zeroed_with_voided_in_its_note() -> None:
    """is_voided needs TotalAmt 0, Balance 0 and PrivateNote starting 'Voided'; a paid invoice (Balance 0) is not."""
    assert is_voided(qbo_invoice("1", voided=True)["Invoice"])
    assert not is_voided(qbo_invoice("1", paid=True)["Invoice"])
    assert not is_voided({"TotalAmt": 0, "Balance": 0, "PrivateNote": "credit"})
