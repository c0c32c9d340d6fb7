"""Provider adapters, sans-IO: the exact request each sends and the outcome of each answer."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchvoid.models import Item, Outcome, OutcomeKind, Response
from batchvoid.providers import REGISTRY
from batchvoid.providers.campfire import Campfire
from batchvoid.providers.chargeover import ChargeOver
from batchvoid.providers.maple import Maple
from batchvoid.providers.rapyd import Rapyd, Salts, signature
from batchvoid.providers.sellapp import SellApp

KEY = "bv1-0123456789abcdef0123456789abcdef0123456789abcdef"


def answer(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, dict(headers or {}), raw)


def test_rapyd_signature_matches_the_documented_test_vector() -> None:
    """The signature of the FACTS.md test vector is exactly the documented one."""
    assert (
        signature(
            method="post",
            path="/v1/invoices/invoice_a87d5fa33216972acd2ccd9972ce0112/void",
            salt="abcdefgh12345678",
            timestamp=1700000000,
            access_key="rak_TEST",
            secret_key="rsk_TEST",
        )
        == "NTMzM2M3OTVkZWY3ZDJlNGI0MGM5MzcyMzhjZTI0ZWI3ZWNiZDk0ZGU1MDQ2YmM2NjgzNmMwODg2OGMxYjQ4MQ=="
    )


def test_rapyd_request_is_signed_with_fresh_salt_and_time() -> None:
    """Rapyd: POST, no body, the five signing headers and the idempotency key; the vector's signature."""
    adapter = Rapyd(
        "https://sandboxapi.rapyd.net",
        "rak_TEST",
        "rsk_TEST",
        salt=lambda: "abcdefgh12345678",
        clock=lambda: 1700000000.7,
    )
    request = adapter.void_request(Item(1, "rapyd", "invoice_a87d5fa33216972acd2ccd9972ce0112"), KEY)
    assert request.method == "POST"
    assert (
        request.url
        == "https://sandboxapi.rapyd.net/v1/invoices/invoice_a87d5fa33216972acd2ccd9972ce0112/void"
    )
    assert request.body is None
    assert request.headers == {
        "access_key": "rak_TEST",
        "salt": "abcdefgh12345678",
        "timestamp": "1700000000",
        "signature": "NTMzM2M3OTVkZWY3ZDJlNGI0MGM5MzcyMzhjZTI0ZWI3ZWNiZDk0ZGU1MDQ2YmM2NjgzNmMwODg2OGMxYjQ4MQ==",
        "Content-Type": "application/json",
        "idempotency": KEY,
    }


def test_rapyd_salt_is_new_for_every_request() -> None:
    """Two requests for the same item carry different salts (8-16 chars) and the same key."""
    adapter = Rapyd("https://x", "a", "b")
    first, second = (adapter.void_request(Item(1, "rapyd", "i"), KEY) for _ in range(2))
    assert first.headers["salt"] != second.headers["salt"]
    assert 8 <= len(first.headers["salt"]) <= 16
    assert first.headers["idempotency"] == second.headers["idempotency"] == KEY


def test_rapyd_salts_are_read_from_the_os_256_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each salt is 12 random bytes as 16 URL-safe characters, every one new; the OS's random
    source is read once per 256 (a read per request let go of the GIL on the loop's hot path)."""
    reads: list[int] = []
    urandom = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: reads.append(n) or urandom(n))
    salts = Salts()
    got = [salts() for _ in range(600)]
    assert len(set(got)) == 600
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", salt) for salt in got)
    assert reads == [12 * 256] * 3


def test_chargeover_request() -> None:
    """ChargeOver: Basic auth of the two keys, POST .../_action/void with a {} JSON body."""
    adapter = REGISTRY["chargeover"].build(
        "https://acme.chargeover.com", {"username": "pub", "password": "priv"}, {}
    )
    request = adapter.void_request(Item(1, "chargeover", "10231"), KEY)
    assert request.method == "POST"
    assert request.url == "https://acme.chargeover.com/api/v3/invoice/10231/_action/void"
    assert request.body == b"{}"
    assert request.headers == {
        "Authorization": "Basic " + base64.b64encode(b"pub:priv").decode(),
        "Content-Type": "application/json",
        "Accept": "application/json",
    }


def test_campfire_request_sends_the_items_own_void_date_and_never_the_hosts_today() -> None:
    """Campfire: Token auth, trailing slash, the void_date fixed at ingest; without one, no request at all."""
    adapter = Campfire("https://api.meetcampfire.com", "tok")
    request = adapter.void_request(Item(1, "campfire", "5521", void_date="2026-11-30"), KEY)
    assert request.method == "POST"
    assert request.url == "https://api.meetcampfire.com/coa/api/v1/invoice/5521/void/"
    assert request.headers["Authorization"] == "Token tok"
    assert request.body == b'{"void_date":"2026-11-30"}'
    with pytest.raises(ValueError, match="no void_date"):
        adapter.void_request(Item(7, "campfire", "5521"), KEY)


def test_maple_request_uses_row_company_over_profile() -> None:
    """Maple: Bearer auth, company in the path (the row's wins), Idempotency-Key of at most 64."""
    adapter = Maple("https://api.maplebilling.com", "tok", "cmp_main")
    request = adapter.void_request(Item(1, "maple", "uuid-1"), KEY)
    assert request.method == "POST"
    assert request.url == "https://api.maplebilling.com/api/v1/companies/cmp_main/invoices/uuid-1/void"
    assert request.headers == {
        "Authorization": "Bearer tok",
        "Idempotency-Key": KEY,
        "Accept": "application/json",
    }
    assert len(request.headers["Idempotency-Key"]) <= 64
    other = adapter.void_request(Item(1, "maple", "uuid-1", company_id="cmp_emea"), KEY)
    assert "/companies/cmp_emea/" in other.url


def test_sellapp_request_sends_store_when_known() -> None:
    """SellApp: Bearer auth, PATCH .../mark-voided, X-STORE from the row or the profile, else none."""
    plain = SellApp("https://sell.app", "key").void_request(Item(1, "sellapp", "884201"), KEY)
    assert plain.method == "PATCH"
    assert plain.url == "https://sell.app/api/v2/invoices/884201/mark-voided"
    assert plain.headers == {"Authorization": "Bearer key", "Accept": "application/json"}
    stored = SellApp("https://sell.app", "key", "shop").void_request(
        Item(1, "sellapp", "1", store="other"), KEY
    )
    assert stored.headers["X-STORE"] == "other"


@given(invoice_id=st.text(min_size=1, max_size=40))
def test_ids_cannot_change_the_path(invoice_id: str) -> None:
    """Whatever an id holds ('/', '..', '?', '#'), it stays one percent-encoded path segment."""
    request = ChargeOver("https://x", "Basic y").void_request(Item(1, "chargeover", invoice_id), KEY)
    segment = request.url.removeprefix("https://x/api/v3/invoice/").removesuffix("/_action/void")
    assert not set(segment) & set("/?#")


CO_ERR = {"code": 400, "status": "Error", "details": {}, "response": False}
RAPYD_NOT_VOIDABLE = {
    "status": {
        "error_code": "ERROR_VOID_NOT_UNCOLLECTIBLE_OR_OPEN_INVOICE",
        "status": "ERROR",
        "message": "not open",
        "operation_id": "op-2",
    }
}

CASES: list[tuple[str, Response, OutcomeKind]] = [
    (
        "chargeover",
        answer(200, {"code": 200, "status": "OK", "message": "", "response": True}),
        OutcomeKind.VOIDED,
    ),
    ("chargeover", answer(400, {**CO_ERR, "message": "Invoice is already void."}), OutcomeKind.ALREADY_VOID),
    ("chargeover", answer(400, {**CO_ERR, "message": "Cannot void a paid invoice."}), OutcomeKind.REJECTED),
    (
        "chargeover",
        answer(404, {**CO_ERR, "code": 404, "message": "Invoice not found."}),
        OutcomeKind.REJECTED,
    ),
    ("chargeover", answer(401, {**CO_ERR, "code": 401, "message": "Invalid"}), OutcomeKind.AUTH_FAILED),
    ("chargeover", answer(429, {**CO_ERR, "code": 429}), OutcomeKind.THROTTLED),
    ("chargeover", answer(500, {**CO_ERR, "code": 500}), OutcomeKind.RETRYABLE),
    ("chargeover", answer(502, b"<html>Bad gateway</html>"), OutcomeKind.RETRYABLE),
    (
        "rapyd",
        answer(200, {"status": {"status": "SUCCESS", "operation_id": "op-1"}, "data": {"status": "void"}}),
        OutcomeKind.VOIDED,
    ),
    (
        "rapyd",
        answer(400, {"status": {"error_code": "INVALID_INVOICE_ID", "status": "ERROR"}}),
        OutcomeKind.REJECTED,
    ),
    ("rapyd", answer(400, RAPYD_NOT_VOIDABLE), OutcomeKind.REJECTED),
    ("rapyd", answer(401, {"status": {"error_code": "UNAUTHENTICATED_API_CALL"}}), OutcomeKind.AUTH_FAILED),
    ("rapyd", answer(429, {"status": {"error_code": "TOO_MANY_REQUESTS"}}), OutcomeKind.THROTTLED),
    ("rapyd", answer(503, b"upstream"), OutcomeKind.RETRYABLE),
    ("campfire", answer(200, {"id": 1, "status": "void", "voided_date": "2026-11-21"}), OutcomeKind.VOIDED),
    ("campfire", answer(409, {"detail": "Invoice is already voided."}), OutcomeKind.ALREADY_VOID),
    (
        "campfire",
        answer(400, {"detail": "Cannot void an invoice that has payments applied."}),
        OutcomeKind.REJECTED,
    ),
    ("campfire", answer(400, {"void_date": ["Date has wrong format."]}), OutcomeKind.REJECTED),
    ("campfire", answer(404, {"detail": "Not found."}), OutcomeKind.REJECTED),
    ("campfire", answer(401, {"detail": "Invalid token."}), OutcomeKind.AUTH_FAILED),
    ("campfire", answer(429, {"detail": "throttled"}, {"Retry-After": "3"}), OutcomeKind.THROTTLED),
    ("maple", answer(200, {"uuid": "u", "status": "VOID"}), OutcomeKind.VOIDED),
    (
        "maple",
        answer(400, {"error_message": "Invoice is already void", "error_code": "invoice_already_void"}),
        OutcomeKind.ALREADY_VOID,
    ),
    (
        "maple",
        answer(
            400,
            {
                "error_message": "Invoice with status PAID cannot be voided",
                "error_code": "invoice_not_voidable",
            },
        ),
        OutcomeKind.REJECTED,
    ),
    (
        "maple",
        answer(404, {"error_message": "Invoice not found", "error_code": "invoice_not_found"}),
        OutcomeKind.REJECTED,
    ),
    ("maple", answer(403, {"error_message": "Forbidden"}), OutcomeKind.AUTH_FAILED),
    ("maple", answer(409, {"error_type": "idempotency_error"}), OutcomeKind.RETRYABLE),
    ("maple", answer(500, {"error_type": "api_error"}), OutcomeKind.RETRYABLE),
    ("maple", answer(500, {"error_type": "api_error"}, {"Idempotency-Used": "true"}), OutcomeKind.REJECTED),
    ("sellapp", answer(200, {"id": 1, "status": {"status": {"status": "VOIDED"}}}), OutcomeKind.VOIDED),
    (
        "sellapp",
        answer(422, {"message": "Invoice is already voided.", "request_id": "r"}),
        OutcomeKind.ALREADY_VOID,
    ),
    (
        "sellapp",
        answer(422, {"message": "Only pending invoices can be marked as voided."}),
        OutcomeKind.REJECTED,
    ),
    ("sellapp", answer(404, {"message": "Invoice not found."}), OutcomeKind.REJECTED),
    ("sellapp", answer(401, {"message": "Unauthenticated."}), OutcomeKind.AUTH_FAILED),
    ("sellapp", answer(403, {"message": "You do not have access to this store."}), OutcomeKind.REJECTED),
    ("sellapp", answer(429, {"message": "Too Many Attempts."}), OutcomeKind.THROTTLED),
    ("sellapp", answer(200, {"id": 1, "status": {"status": {"status": "PENDING"}}}), OutcomeKind.REJECTED),
]

ADAPTERS = {
    "chargeover": ChargeOver("https://x", "Basic y"),
    "rapyd": Rapyd("https://x", "a", "b"),
    "campfire": Campfire("https://x", "t"),
    "maple": Maple("https://x", "t", "cmp_x"),
    "sellapp": SellApp("https://x", "t"),
}


@pytest.mark.parametrize(("provider", "response", "kind"), CASES)
def test_each_documented_answer_has_its_outcome(provider: str, response: Response, kind: OutcomeKind) -> None:
    """Each provider's documented answers map to voided, already void, rejected, auth, throttled, retryable."""
    outcome = ADAPTERS[provider].parse_void(Item(1, provider, "i"), response)
    assert outcome.kind is kind
    assert outcome.http_status == response.status
    if kind not in (OutcomeKind.VOIDED,):
        assert f"HTTP {response.status}" in outcome.reason or "answered 200" in outcome.reason


def test_provider_message_is_in_the_reason() -> None:
    """A rejection's reason carries the provider's own message, for the report."""
    outcome = ADAPTERS["maple"].parse_void(Item(1, "maple", "i"), CASES[24][1])
    assert outcome.reason == "HTTP 404: invoice_not_found: Invoice not found"


def test_retry_after_in_seconds_and_as_http_date() -> None:
    """A 429's Retry-After is read both as seconds and as an HTTP date."""
    seconds = ADAPTERS["sellapp"].parse_void(Item(1, "sellapp", "i"), answer(429, {}, {"Retry-After": "7"}))
    assert seconds.retry_after == 7.0
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    when = soon.strftime("%a, %d %b %Y %H:%M:%S GMT")
    dated = ADAPTERS["sellapp"].parse_void(Item(1, "sellapp", "i"), answer(429, {}, {"retry-after": when}))
    assert dated.retry_after is not None
    assert 25 < dated.retry_after <= 30
    bare = ADAPTERS["sellapp"].parse_void(Item(1, "sellapp", "i"), answer(429, {}))
    assert bare.retry_after is None


def test_rapyd_ambiguous_rejection_is_settled_by_a_status_lookup() -> None:
    """Rapyd's 'not open or uncollectible' asks for a GET of the invoice; 'void' there means already void."""
    adapter = ADAPTERS["rapyd"]
    item = Item(1, "rapyd", "inv_1")
    rejected = adapter.parse_void(item, answer(400, RAPYD_NOT_VOIDABLE))
    assert rejected.check_status
    lookup = adapter.lookup_request(item)
    assert lookup is not None
    assert (lookup.method, lookup.url) == ("GET", "https://x/v1/invoices/inv_1")
    assert "idempotency" not in lookup.headers
    void = answer(200, {"status": {"status": "SUCCESS"}, "data": {"id": "inv_1", "status": "void"}})
    paid = answer(200, {"status": {"status": "SUCCESS"}, "data": {"id": "inv_1", "status": "paid"}})
    assert adapter.parse_lookup(item, void, rejected).kind is OutcomeKind.ALREADY_VOID
    settled = adapter.parse_lookup(item, paid, rejected)
    assert settled.kind is OutcomeKind.REJECTED
    assert "invoice status: paid" in settled.reason
    throttled = adapter.parse_lookup(item, answer(429, {}), rejected)
    assert throttled.kind is OutcomeKind.THROTTLED


def test_only_ambiguous_rejections_ask_for_a_lookup() -> None:
    """Not-found and every other provider's rejections are final without a lookup."""
    not_found = answer(400, {"status": {"error_code": "INVALID_INVOICE_ID"}})
    assert not ADAPTERS["rapyd"].parse_void(Item(1, "rapyd", "i"), not_found).check_status
    for provider, response, _ in CASES:
        if provider != "rapyd":
            assert not ADAPTERS[provider].parse_void(Item(1, provider, "i"), response).check_status


@given(body=st.binary(max_size=200), status=st.integers(100, 599))
def test_any_answer_gives_an_outcome(body: bytes, status: int) -> None:
    """No body or status, however malformed, makes an adapter raise: it always gives an outcome."""
    for provider, adapter in ADAPTERS.items():
        outcome = adapter.parse_void(Item(1, provider, "i"), Response(status, {}, body))
        assert isinstance(outcome, Outcome)
        if status >= 500:
            assert outcome.kind in (OutcomeKind.RETRYABLE, OutcomeKind.REJECTED)
