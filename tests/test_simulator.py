"""The provider simulator, driven over loopback HTTP the way batchvoid's engine drives it."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import functools
import gc
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import pytest

from batchvoid.heap import YOUNG_COLLECTION_AT
from batchvoid.providers.rapyd import signature
from batchvoid.simulator import (
    ACCOUNTS,
    CREDENTIALS,
    PROVIDER_TYPES,
    Faults,
    Simulator,
    SimulatorSettings,
    serve_forever,
)
from batchvoid.simulator.lane import Lane
from batchvoid.simulator.providers.rapyd import signed_body
from batchvoid.simulator.ratelimit import FixedWindow, SlidingWindow, Throttle, rapyd_windows
from batchvoid.simulator.settings import parse_rate_limit

pytestmark = pytest.mark.anyio

RAPYD = CREDENTIALS["rapyd"]
NOT_VOIDABLE = "ERROR_VOID_NOT_UNCOLLECTIBLE_OR_OPEN_INVOICE"
_DEFAULT: Any = object()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def rapyd_headers(
    method: str,
    path: str,
    *,
    body: str = "",
    access_key: str = RAPYD["access_key"],
    secret_key: str = RAPYD["secret_key"],
    salt: str = "salt5678salt",
    timestamp: int | None = None,
    idempotency: str | None = None,
) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "access_key": access_key,
        "salt": salt,
        "timestamp": str(stamp),
        "signature": signature(
            method=method,
            path=path,
            salt=salt,
            timestamp=stamp,
            access_key=access_key,
            secret_key=secret_key,
            body=body,
        ),
        "Content-Type": "application/json",
    }
    if idempotency is not None:
        headers["idempotency"] = idempotency
    return headers


@dataclass(frozen=True)
class Client:
    """A test's view of one running simulator: requests shaped like each provider's."""

    sim: Simulator
    session: aiohttp.ClientSession

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Reply:
        options: dict[str, Any] = {"headers": headers, "data": body}
        if timeout is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self.session.request(method, path, **options) as response:
            return Reply(response.status, dict(response.headers), await response.text())

    async def chargeover(
        self, invoice_id: str, *, authorization: str | None = _DEFAULT, body: bytes = b"{}"
    ) -> Reply:
        if authorization is _DEFAULT:
            authorization = basic(**CREDENTIALS["chargeover"])
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        return await self.send(
            "POST", f"/api/v3/invoice/{invoice_id}/_action/void", headers=headers, body=body
        )

    async def rapyd(
        self, invoice_id: str, *, method: str = "POST", body: bytes = b"", **signing: Any
    ) -> Reply:
        path = f"/v1/invoices/{invoice_id}" + ("/void" if method == "POST" else "")
        headers = rapyd_headers(method, path, body=signed_body(body), **signing)
        return await self.send(method, path, headers=headers, body=body or None)

    async def campfire(
        self,
        invoice_id: str,
        *,
        authorization: str | None = "Token " + CREDENTIALS["campfire"]["api_key"],
        body: bytes | None = None,
        slash: str = "/",
    ) -> Reply:
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        path = f"/coa/api/v1/invoice/{invoice_id}/void{slash}"
        return await self.send("POST", path, headers=headers, body=body)

    async def maple(
        self,
        invoice_id: str,
        *,
        company: str = "cmp_simulated",
        token: str = CREDENTIALS["maple"]["api_token"],
        key: str | None = None,
        timeout: float | None = None,
    ) -> Reply:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        path = f"/api/v1/companies/{company}/invoices/{invoice_id}/void"
        return await self.send("POST", path, headers=headers, timeout=timeout)

    async def sellapp(
        self,
        invoice_id: str,
        *,
        api_key: str = CREDENTIALS["sellapp"]["api_key"],
        store: str | None = None,
    ) -> Reply:
        headers = {"Authorization": f"Bearer {api_key}"}
        if store is not None:
            headers["X-STORE"] = store
        return await self.send("PATCH", f"/api/v2/invoices/{invoice_id}/mark-voided", headers=headers)

    async def stripe(
        self,
        invoice_id: str,
        *,
        secret_key: str = CREDENTIALS["stripe"]["secret_key"],
        method: str = "POST",
        key: str | None = None,
        body: bytes = b"",
    ) -> Reply:
        headers = {
            "Authorization": basic(secret_key, ""),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        if key is not None:
            headers["Idempotency-Key"] = key
        path = f"/stripe/v1/invoices/{invoice_id}" + ("/void" if method == "POST" else "")
        return await self.send(method, path, headers=headers, body=body if method == "POST" else None)

    async def recurly(
        self,
        invoice_id: str,
        *,
        call: str = "mark_failed",
        api_key: str = CREDENTIALS["recurly"]["api_key"],
        accept: str | None = "application/vnd.recurly.v2021-02-25",
    ) -> Reply:
        headers = {"Authorization": basic(api_key, "")}
        if accept is not None:
            headers["Accept"] = accept
        if call == "read":
            return await self.send("GET", f"/recurly/invoices/{invoice_id}", headers=headers)
        return await self.send("PUT", f"/recurly/invoices/{invoice_id}/{call}", headers=headers)

    async def maxio(
        self,
        invoice_id: str,
        *,
        api_key: str = CREDENTIALS["maxio"]["api_key"],
        password: str = "x",
        body: bytes | None = b'{"void": {"reason": "duplicate"}}',
    ) -> Reply:
        headers = {"Authorization": basic(api_key, password), "Content-Type": "application/json"}
        if body is None:
            return await self.send("GET", f"/maxio/invoices/{invoice_id}.json", headers=headers)
        return await self.send("POST", f"/maxio/invoices/{invoice_id}/void.json", headers=headers, body=body)

    async def chargebee(
        self,
        invoice_id: str,
        *,
        api_key: str = CREDENTIALS["chargebee"]["api_key"],
        method: str = "POST",
        key: str | None = None,
        body: bytes = b"",
    ) -> Reply:
        headers = {"Authorization": basic(api_key, ""), "Content-Type": "application/x-www-form-urlencoded"}
        if key is not None:
            headers["chargebee-idempotency-key"] = key
        path = f"/chargebee/api/v2/invoices/{invoice_id}" + ("/void" if method == "POST" else "")
        return await self.send(method, path, headers=headers, body=body if method == "POST" else None)

    async def lago(
        self, invoice_id: str, *, api_key: str = CREDENTIALS["lago"]["api_key"], method: str = "POST"
    ) -> Reply:
        path = f"/lago/api/v1/invoices/{invoice_id}" + ("/void" if method == "POST" else "")
        return await self.send(method, path, headers={"Authorization": f"Bearer {api_key}"})

    async def xero(
        self,
        invoice_id: str,
        *,
        token: str | None = None,
        method: str = "POST",
        key: str | None = None,
        tenant: str = ACCOUNTS["xero"]["tenant_id"],
        status: str = "VOIDED",
    ) -> Reply:
        headers = {
            "Authorization": f"Bearer {token or self.sim.access_token('xero')}",
            "xero-tenant-id": tenant,
            "Content-Type": "application/json",
        }
        if key is not None:
            headers["Idempotency-Key"] = key
        body = json.dumps({"Invoices": [{"InvoiceID": invoice_id, "Status": status}]}).encode()
        path = f"/xero/api.xro/2.0/Invoices/{invoice_id}"
        return await self.send(method, path, headers=headers, body=body if method == "POST" else None)

    async def quickbooks(
        self,
        invoice_id: str,
        *,
        token: str | None = None,
        sync_token: str | None = None,
        request_id: str | None = None,
        realm: str = ACCOUNTS["quickbooks"]["realm_id"],
    ) -> Reply:
        """Read the invoice for its SyncToken (unless given), then void it at that token."""
        headers = {"Authorization": f"Bearer {token or self.sim.access_token('quickbooks')}"}
        company = f"/quickbooks/v3/company/{realm}"
        if sync_token is None:
            read = await self.send("GET", f"{company}/invoice/{invoice_id}", headers=headers)
            if read.status not in (200, 400):
                return read
            # A 400 (no such invoice): void it anyway, at the token a new invoice has.
            sync_token = read.json["Invoice"]["SyncToken"] if read.status == 200 else "0"
        query = "operation=void" + (f"&requestid={request_id}" if request_id else "")
        body = json.dumps({"Id": invoice_id, "SyncToken": sync_token}).encode()
        return await self.send(
            "POST",
            f"{company}/invoice?{query}",
            headers={**headers, "Content-Type": "application/json"},
            body=body,
        )

    async def void(self, provider: str, invoice_id: str) -> Reply:
        """Void with the simulator's own, correct credentials."""
        match provider:
            case "chargeover":
                return await self.chargeover(invoice_id)
            case "rapyd":
                return await self.rapyd(invoice_id)
            case "campfire":
                return await self.campfire(invoice_id)
            case "maple":
                return await self.maple(invoice_id)
            case "stripe":
                return await self.stripe(invoice_id)
            case "recurly":
                return await self.recurly(invoice_id)
            case "maxio":
                return await self.maxio(invoice_id)
            case "chargebee":
                return await self.chargebee(invoice_id)
            case "lago":
                return await self.lago(invoice_id)
            case "xero":
                return await self.xero(invoice_id)
            case "quickbooks":
                return await self.quickbooks(invoice_id)
            case _:
                return await self.sellapp(invoice_id)

    async def void_once(self, provider: str, invoice_id: str) -> Reply:
        """Void in one request: QuickBooks without its read, at a new invoice's SyncToken."""
        if provider == "quickbooks":
            return await self.quickbooks(invoice_id, sync_token="0")
        return await self.void(provider, invoice_id)

    async def void_with_wrong_credentials(self, provider: str, invoice_id: str) -> Reply:
        """Void with another account's credentials (the maple token, or sellapp's key)."""
        other = CREDENTIALS["sellapp"]["api_key"]
        match provider:
            case "chargeover":
                return await self.chargeover(invoice_id, authorization=basic("sim_co_public", "x"))
            case "rapyd":
                return await self.rapyd(invoice_id, secret_key="rsk_TEST")
            case "campfire":
                return await self.campfire(invoice_id, authorization=f"Token {other}")
            case "maple":
                return await self.maple(invoice_id, token=other)
            case "stripe":
                return await self.stripe(invoice_id, secret_key=other)
            case "recurly":
                return await self.recurly(invoice_id, api_key=other)
            case "maxio":
                return await self.maxio(invoice_id, api_key=other)
            case "chargebee":
                return await self.chargebee(invoice_id, api_key=other)
            case "lago":
                return await self.lago(invoice_id, api_key=other)
            case "xero":
                return await self.xero(invoice_id, token="sim_xero_wrong")
            case "quickbooks":
                return await self.quickbooks(invoice_id, token="sim_qbo_wrong", sync_token="0")
            case _:
                return await self.sellapp(invoice_id, api_key=CREDENTIALS["maple"]["api_token"])


@contextlib.asynccontextmanager
async def simulate(settings: SimulatorSettings | None = None) -> AsyncIterator[Client]:
    sim = Simulator(settings)
    async with sim.serve() as url, aiohttp.ClientSession(base_url=url) as session:
        yield Client(sim, session)


def faults(**by_provider: Faults) -> SimulatorSettings:
    return SimulatorSettings(faults=by_provider, seed=1234, hang_s=0.3)


def contains(actual: Any, expected: Any) -> bool:
    """Whether `expected` is a (recursive) subset of `actual`."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(contains(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)


def chargeover_body(code: int, message: str) -> dict[str, Any]:
    ok = code == 200
    return {
        "code": code,
        "status": "OK" if ok else "Error",
        "message": message,
        "details": {},
        "response": ok,
    }


def rapyd_error(code: str) -> dict[str, Any]:
    return {"status": {"error_code": code, "status": "ERROR", "response_code": code}}


def maple_error(status: int, error_type: str, code: str, message: str) -> dict[str, Any]:
    return {
        "error_message": message,
        "error_type": error_type,
        "error_code": code,
        "error_status": status,
    }


def sellapp_error(message: str, error_type: str, code: str) -> dict[str, Any]:
    return {"message": message, "type": error_type, "code": code}


# provider -> case -> (invoice id, status, expected subset of the JSON body)
def stripe_error(error_type: str, code: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "code": code}}


def recurly_error(error_type: str) -> dict[str, Any]:
    return {"error": {"type": error_type}}


MAXIO_NOT_VOIDABLE = {
    "errors": ["Invoice status must be 'open', 'canceled', or 'pending' and non-consolidated to be voided."]
}


def chargebee_error(status: int, code: str) -> dict[str, Any]:
    return {"api_error_code": code, "http_status_code": status}


def lago_error(status: int, code: str) -> dict[str, Any]:
    return {"status": status, "code": code}


def xero_error(message: str) -> dict[str, Any]:
    return {"Type": "ValidationException", "Elements": [{"ValidationErrors": [{"Message": message}]}]}


def quickbooks_error(code: str, message: str) -> dict[str, Any]:
    return {"Fault": {"Error": [{"code": code, "Message": message}]}}


XERO_ID = "a03ffcd2-5d91-4c7e-b483-318584e9e439"
ANSWERS: dict[str, dict[str, tuple[str, int, dict[str, Any] | bytes | None]]] = {
    "chargeover": {
        "voided": ("inv-1", 200, chargeover_body(200, "")),
        "already_void": ("void-1", 400, chargeover_body(400, "Invoice is already void.")),
        "paid": ("paid-1", 400, chargeover_body(400, "Cannot void a paid invoice.")),
        "missing": ("missing-1", 404, chargeover_body(404, "Invoice not found.")),
        "wrong_credentials": (
            "inv-1",
            401,
            chargeover_body(401, "Invalid or incorrect authorization [Invalid credentials.]"),
        ),
    },
    "rapyd": {
        "voided": (
            "invoice_1",
            200,
            {
                "status": {"error_code": "", "status": "SUCCESS", "response_code": ""},
                "data": {"id": "invoice_1", "status": "void"},
            },
        ),
        "already_void": ("void_1", 400, rapyd_error(NOT_VOIDABLE)),
        "paid": ("paid_1", 400, rapyd_error(NOT_VOIDABLE)),
        "missing": ("missing_1", 400, rapyd_error("INVALID_INVOICE_ID")),
        "wrong_credentials": ("invoice_1", 401, rapyd_error("UNAUTHENTICATED_API_CALL")),
    },
    "campfire": {
        "voided": ("123", 200, {"id": 123, "status": "void"}),
        "already_void": ("void-1", 409, {"detail": "Invoice is already voided."}),
        "paid": ("paid-1", 400, {"detail": "Cannot void an invoice that has payments applied."}),
        "missing": ("missing-1", 404, {"detail": "Not found."}),
        "wrong_credentials": ("123", 401, {"detail": "Invalid token."}),
    },
    "maple": {
        "voided": ("inv_uuid_1", 200, {"uuid": "inv_uuid_1", "status": "VOID"}),
        "already_void": (
            "void-1",
            400,
            maple_error(400, "invalid_request", "invoice_already_void", "Invoice is already void"),
        ),
        "paid": (
            "paid-1",
            400,
            maple_error(
                400,
                "invalid_request",
                "invoice_not_voidable",
                "Invoice with status PAID cannot be voided",
            ),
        ),
        "missing": (
            "missing-1",
            404,
            maple_error(404, "not_found", "invoice_not_found", "Invoice not found"),
        ),
        "wrong_credentials": (
            "inv_uuid_1",
            401,
            maple_error(401, "authentication_error", "unauthorized", "Invalid API token"),
        ),
    },
    "sellapp": {
        "voided": (
            "1001",
            200,
            {"id": 1001, "status": {"status": {"status": "VOIDED"}}, "store_id": 1},
        ),
        "already_void": (
            "void-1",
            422,
            sellapp_error("Invoice is already voided.", "invalid_request", "invoice_already_voided"),
        ),
        "paid": (
            "paid-1",
            422,
            sellapp_error(
                "Only pending invoices can be marked as voided.",
                "invalid_request",
                "invoice_not_pending",
            ),
        ),
        "missing": ("missing-1", 404, sellapp_error("Invoice not found.", "not_found", "not_found")),
        "wrong_credentials": (
            "1001",
            401,
            sellapp_error("Unauthenticated.", "authentication_error", "unauthenticated"),
        ),
    },
    "stripe": {
        "voided": ("in_1", 200, {"id": "in_1", "object": "invoice", "status": "void"}),
        "already_void": ("void_1", 400, stripe_error("invalid_request_error", "invoice_not_open")),
        "paid": ("paid_1", 400, stripe_error("invalid_request_error", "invoice_not_open")),
        "missing": ("missing_1", 404, stripe_error("invalid_request_error", "resource_missing")),
        "wrong_credentials": ("in_1", 401, stripe_error("invalid_request_error", "api_key_invalid")),
    },
    "recurly": {  # a charge invoice: marked failed
        "voided": ("e28zov4fw0v2", 200, {"id": "e28zov4fw0v2", "type": "charge", "state": "failed"}),
        "already_void": ("void_e28zov4fw0v3", 422, recurly_error("validation")),
        "paid": ("paid_e28zov4fw0v4", 422, recurly_error("validation")),
        "missing": ("missing_1", 404, recurly_error("not_found")),
        "wrong_credentials": ("e28zov4fw0v2", 401, recurly_error("unauthorized")),
    },
    "maxio": {
        "voided": ("inv_8htcd29wcq3q6", 200, {"uid": "inv_8htcd29wcq3q6", "status": "voided"}),
        "already_void": ("void_inv_1", 422, MAXIO_NOT_VOIDABLE),
        "paid": ("paid_inv_1", 422, MAXIO_NOT_VOIDABLE),
        "missing": ("missing_inv_1", 404, None),
        "wrong_credentials": ("inv_1", 401, {"errors": ["HTTP Basic: Access denied."]}),
    },
    "chargebee": {
        "voided": ("cb_1", 200, {"invoice": {"id": "cb_1", "status": "voided"}}),
        "already_void": ("void_1", 409, chargebee_error(409, "invalid_state_for_request")),
        "paid": ("paid_1", 409, chargebee_error(409, "invalid_state_for_request")),
        "missing": ("missing_1", 404, chargebee_error(404, "resource_not_found")),
        "wrong_credentials": ("cb_1", 401, chargebee_error(401, "api_authentication_failed")),
    },
    "lago": {
        "voided": ("lg_1", 200, {"invoice": {"lago_id": "lg_1", "status": "voided"}}),
        "already_void": ("void_1", 405, lago_error(405, "not_voidable")),
        "paid": ("paid_1", 405, lago_error(405, "not_voidable")),
        "missing": ("missing_1", 404, lago_error(404, "invoice_not_found")),
        "wrong_credentials": ("lg_1", 401, {"status": 401, "error": "Unauthorized"}),
    },
    "xero": {
        "voided": (XERO_ID, 200, {"Invoices": [{"InvoiceID": XERO_ID, "Status": "VOIDED"}]}),
        "already_void": ("void-1", 400, xero_error("Invoice not of valid status for modification")),
        "paid": (
            "paid-1",
            400,
            xero_error("This document cannot be edited as it has a payment or credit note allocated to it."),
        ),
        "missing": ("missing-1", 404, b"The resource you're looking for cannot be found"),
        "wrong_credentials": (XERO_ID, 401, {"Title": "Unauthorized", "Status": 401}),
    },
    "quickbooks": {
        "voided": ("130", 200, {"Invoice": {"Id": "130", "TotalAmt": 0, "PrivateNote": "Voided"}}),
        "already_void": ("void-1", 400, quickbooks_error("5010", "Stale Object Error")),
        "paid": ("paid-1", 400, quickbooks_error("6540", "Business Validation Error")),
        "missing": ("missing-1", 400, quickbooks_error("610", "Object Not Found")),
        "wrong_credentials": ("130", 401, {"fault": {"type": "AUTHENTICATION"}}),
    },
}
CASES = [(provider, case) for provider in PROVIDER_TYPES for case in ANSWERS[provider]]


# Every provider's answers.


@pytest.mark.parametrize(("provider", "case"), CASES)
async def test_provider_answers(provider: str, case: str) -> None:
    """Each provider answers success, already-void, paid, missing and bad auth as documented."""
    invoice_id, status, expected = ANSWERS[provider][case]
    async with simulate() as client:
        if case == "wrong_credentials":
            reply = await client.void_with_wrong_credentials(provider, invoice_id)
        else:
            reply = await client.void(provider, invoice_id)
        assert reply.status == status
        if isinstance(expected, bytes):  # a provider's plain-text answer (Xero's 404)
            assert reply.text == expected.decode()
        else:
            assert reply.headers["Content-Type"].startswith("application/json")
            assert contains(reply.json, expected), reply.json
        applied = 1 if case == "voided" else 0
        assert client.sim.voids_applied[(provider, invoice_id)] == applied
        assert client.sim.void_requests[(provider, invoice_id)] == (0 if case == "wrong_credentials" else 1)


@pytest.mark.parametrize("provider", PROVIDER_TYPES)
async def test_second_void_is_already_void(provider: str) -> None:
    """Voiding an invoice the simulator voided answers the provider's already-void error."""
    invoice_id = ANSWERS[provider]["voided"][0]
    _, status, expected = ANSWERS[provider]["already_void"]
    async with simulate() as client:
        assert (await client.void(provider, invoice_id)).status == 200
        assert client.sim.invoice_state(provider, invoice_id) == "void"
        again = await client.void(provider, invoice_id)
        assert again.status == status
        assert contains(again.json, expected)
        assert client.sim.void_requests[(provider, invoice_id)] == 2
        assert client.sim.voids_applied[(provider, invoice_id)] == 1
        assert client.sim.stats()[provider]["already_void"] == 1


async def test_chargeover_missing_authorization_and_bad_body() -> None:
    """ChargeOver says which auth problem it is, and wants a JSON object body."""
    async with simulate() as client:
        reply = await client.chargeover("inv-1", authorization=None)
        assert reply.status == 401
        assert reply.json == chargeover_body(
            401, "Invalid or incorrect authorization [Missing (basic) authorization header.]"
        )
        for body in (b"", b"not json", b"[]"):
            reply = await client.chargeover("inv-1", body=body)
            assert reply.status == 400
            assert reply.json == chargeover_body(400, "Missing or invalid parameter.")
        assert client.sim.invoice_state("chargeover", "inv-1") == "open"


async def test_credentials_of_another_account_are_refused() -> None:
    """A credential is compared exactly: another provider's or account's key is a 401."""
    async with simulate() as client:
        for provider in PROVIDER_TYPES:
            reply = await client.void_with_wrong_credentials(provider, "1")
            assert reply.status == 401, provider
        reply = await client.campfire("1", authorization=None)
        assert reply.json == {"detail": "Authentication credentials were not provided."}
        assert client.sim.stats()["totals"]["auth_failed"] == len(PROVIDER_TYPES) + 1


# Rapyd.


async def test_rapyd_signature_checks() -> None:
    """Rapyd rejects a wrong signature, key, salt or a timestamp more than 60 s off."""
    async with simulate() as client:
        stale = int(time.time()) - 120
        for signing in (
            {"secret_key": "rsk_wrong"},
            {"access_key": "rak_TEST"},
            {"timestamp": stale},
            {"timestamp": int(time.time()) + 120},
            {"salt": "short"},
        ):
            reply = await client.rapyd("invoice_1", **signing)
            assert reply.status == 401, signing
            status = reply.json["status"]
            assert status["error_code"] == "UNAUTHENTICATED_API_CALL"
            assert status["message"].startswith("The request was rejected due to an auth")
            assert uuid.UUID(status["operation_id"])
        reply = await client.rapyd("invoice_1", timestamp=int(time.time()) - 50)
        assert reply.status == 200
        assert uuid.UUID(reply.json["status"]["operation_id"])


async def test_rapyd_signs_bodies_without_whitespace() -> None:
    """Rapyd signs `{}` as an empty body and other JSON with whitespace outside strings gone."""
    assert signed_body(b"") == ""
    assert signed_body(b"{ }") == ""
    assert signed_body(b'{ "note": "two  words" }') == '{"note":"two  words"}'
    async with simulate() as client:
        assert (await client.rapyd("invoice_1", body=b"{}")).status == 200
        assert (await client.rapyd("invoice_2", body=b'{\n "a": "b c"\n}')).status == 200


async def test_rapyd_get_reports_invoice_status() -> None:
    """Rapyd's GET invoice tells open, void, paid and draft apart, and 400s a missing one."""
    async with simulate() as client:
        for invoice_id, status in (
            ("invoice_1", "open"),
            ("paid_1", "paid"),
            ("draft_1", "draft"),
            ("void_1", "void"),
        ):
            reply = await client.rapyd(invoice_id, method="GET")
            assert reply.status == 200
            assert reply.json["status"]["status"] == "SUCCESS"
            assert contains(reply.json["data"], {"id": invoice_id, "status": status})
        await client.rapyd("invoice_1")
        voided = await client.rapyd("invoice_1", method="GET")
        assert voided.json["data"]["status"] == "void"
        missing = await client.rapyd("missing_1", method="GET")
        assert missing.status == 400
        assert missing.json["status"]["error_code"] == "INVALID_INVOICE_ID"
        assert missing.json["status"]["message"].endswith("Use the ID of a valid invoice.")
        assert len(client.sim.arrivals["rapyd"]) == 7
        assert client.sim.void_requests[("rapyd", "invoice_1")] == 1
        assert client.sim.stats()["rapyd"]["lookups"] == 6


async def test_rapyd_draft_is_not_voidable() -> None:
    """Rapyd refuses to void a draft with the same error as paid or void invoices."""
    async with simulate() as client:
        reply = await client.rapyd("draft_1")
        assert reply.status == 400
        assert reply.json["status"]["error_code"] == NOT_VOIDABLE
        assert client.sim.invoice_state("rapyd", "draft_1") == "draft"


async def test_rapyd_replays_idempotent_requests() -> None:
    """Rapyd replays the first answer for an `idempotency` value: same status, same body."""
    async with simulate() as client:
        first = await client.rapyd("invoice_1", idempotency="key-1")
        second = await client.rapyd("invoice_1", idempotency="key-1")
        assert first.status == second.status == 200
        assert first.text == second.text
        third = await client.rapyd("invoice_1", idempotency="key-2")
        assert third.status == 400
        assert third.json["status"]["error_code"] == NOT_VOIDABLE
        assert client.sim.void_requests[("rapyd", "invoice_1")] == 2
        assert client.sim.voids_applied[("rapyd", "invoice_1")] == 1
        assert client.sim.stats()["rapyd"]["idempotent_replays"] == 1


# Campfire.


async def test_campfire_needs_the_trailing_slash() -> None:
    """Campfire's void path without its trailing slash is Django's 404."""
    async with simulate() as client:
        reply = await client.campfire("123", slash="")
        assert reply.status == 404
        assert reply.json == {"detail": "Not found."}
        assert client.sim.invoice_state("campfire", "123") == "open"


async def test_campfire_void_date() -> None:
    """Campfire voids on the given void_date, else today (UTC), and 400s a bad date."""
    async with simulate() as client:
        dated = await client.campfire("1", body=b'{"void_date": "2024-02-29"}')
        assert dated.status == 200
        assert dated.json["voided_date"] == "2024-02-29"
        today = await client.campfire("2", body=b"{}")
        assert today.json["voided_date"] == dt.datetime.now(dt.UTC).date().isoformat()
        for bad in (b'{"void_date": "2023-02-30"}', b'{"void_date": "25/12/2023"}'):
            reply = await client.campfire("3", body=bad)
            assert reply.status == 400
            assert reply.json == {
                "void_date": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]
            }
        reply = await client.campfire("3", body=b"{oops")
        assert reply.status == 400
        assert reply.json == {"detail": "JSON parse error"}
        assert client.sim.invoice_state("campfire", "3") == "open"


# Maple.


async def test_maple_replays_with_idempotency_used() -> None:
    """Maple replays a key's first answer, errors included, flagged `Idempotency-Used: true`."""
    async with simulate() as client:
        first = await client.maple("inv-1", key="k1")
        assert first.status == 200
        assert "Idempotency-Used" not in first.headers
        replay = await client.maple("inv-1", key="k1")
        assert replay.status == 200
        assert replay.text == first.text
        assert replay.headers["Idempotency-Used"] == "true"
        paid = await client.maple("paid-1", key="k2")
        paid_again = await client.maple("paid-1", key="k2")
        assert paid.status == paid_again.status == 400
        assert paid_again.headers["Idempotency-Used"] == "true"
        assert client.sim.void_requests[("maple", "inv-1")] == 1
        assert client.sim.stats()["maple"]["idempotent_replays"] == 2


async def test_maple_idempotency_conflicts_and_limits() -> None:
    """Maple 409s a key reused for another invoice or company, and 400s keys over 64 chars."""
    async with simulate() as client:
        assert (await client.maple("inv-1", key="k1")).status == 200
        for reply in (
            await client.maple("inv-2", key="k1"),
            await client.maple("inv-1", key="k1", company="cmp_other"),
        ):
            assert reply.status == 409
            assert reply.json == maple_error(
                409,
                "idempotency_error",
                "idempotency_conflict",
                "Idempotency key reused with a different request",
            )
        assert client.sim.invoice_state("maple", "inv-2") == "open"
        assert (await client.maple("inv-3", key="k" * 64)).status == 200
        too_long = await client.maple("inv-4", key="k" * 65)
        assert too_long.status == 400
        assert too_long.json["error_code"] == "idempotency_key_too_long"


async def test_maple_company_and_draft() -> None:
    """Maple needs a `cmp_` company id and refuses to void drafts."""
    async with simulate() as client:
        reply = await client.maple("inv-1", company="acme")
        assert reply.status == 404
        assert reply.json == maple_error(404, "not_found", "company_not_found", "Company not found")
        draft = await client.maple("draft-1")
        assert draft.status == 400
        assert draft.json["error_message"] == "Invoice with status DRAFT cannot be voided"


# SellApp.


async def test_sellapp_store_header() -> None:
    """SellApp accepts an X-STORE slug and 403s anything else."""
    async with simulate() as client:
        assert (await client.sellapp("1", store="my-store-2")).status == 200
        for store in ("My Store", "", "store_1"):
            reply = await client.sellapp("2", store=store)
            assert reply.status == 403, store
            assert contains(
                reply.json,
                sellapp_error("You do not have access to this store.", "authorization_error", "forbidden"),
            )
            assert uuid.UUID(reply.json["request_id"])
        assert client.sim.invoice_state("sellapp", "2") == "open"


# Routing.


async def test_unknown_routes_are_json_404s() -> None:
    """Any other method or path is a JSON 404 and reaches no provider."""
    async with simulate() as client:
        for method, path in (("GET", "/api/v2/invoices/1/mark-voided"), ("POST", "/nowhere")):
            reply = await client.send(method, path)
            assert reply.status == 404
            assert reply.json["error"] == "not_found"
        assert client.sim.stats()["totals"]["requests"] == 0


# Rate limits.


@pytest.mark.parametrize("provider", PROVIDER_TYPES)
async def test_rate_limit_throttles_past_the_window(provider: str) -> None:
    """Past N requests in the window, each provider answers its 429; nothing is applied."""
    settings = SimulatorSettings.from_specs([f"{provider}:rate_limit=3/10s"])
    async with simulate(settings) as client:
        for n in range(3):
            assert (await client.void_once(provider, f"{n + 1}")).status == 200
        reply = await client.void_once(provider, "9")
        assert reply.status == 429
        if provider == "xero":  # documented: its 429 says when, and which limit
            assert reply.headers["Retry-After"] == "10"
            assert reply.headers["X-Rate-Limit-Problem"] == "minute"
        else:
            assert "Retry-After" not in reply.headers
        expected = {
            "chargeover": chargeover_body(429, "Rate limit exceeded."),
            "rapyd": rapyd_error("TOO_MANY_REQUESTS"),
            "campfire": {"detail": "Request was throttled. Expected available in 10 seconds."},
            "maple": maple_error(429, "rate_limit_error", "rate_limited", "Rate limit exceeded"),
            "sellapp": sellapp_error("Too Many Attempts.", "rate_limit", "too_many_requests"),
            "stripe": stripe_error("invalid_request_error", "rate_limit"),
            "recurly": recurly_error("rate_limited"),
            "maxio": {},  # {"errors": ["Your request was denied due to a usage violation. ..."]}
            "chargebee": chargebee_error(429, "api_request_limit_exceeded"),
            "lago": lago_error(429, "too_many_requests"),
            "xero": {"Title": "Too Many Requests", "Status": 429},
            "quickbooks": quickbooks_error("003001", "ThrottleExceeded"),
        }[provider]
        assert contains(reply.json, expected), reply.json
        assert client.sim.invoice_state(provider, "9") == "open"
        assert client.sim.void_requests[(provider, "9")] == 0
        assert len(client.sim.arrivals[provider]) == 4
        assert client.sim.stats()[provider]["throttled"] == 1


async def test_rate_limit_window_slides() -> None:
    """Throttled requests do not count, and a slot frees when the oldest leaves the window."""
    settings = SimulatorSettings.from_specs(["maple:rate_limit=2/0.1s"])
    async with simulate(settings) as client:
        statuses = [(await client.maple(f"a{n}")).status for n in range(4)]
        assert statuses == [200, 200, 429, 429]
        await anyio.sleep(0.12)
        statuses = [(await client.maple(f"b{n}")).status for n in range(3)]
        assert statuses == [200, 200, 429]


async def test_retry_after_seconds_and_date() -> None:
    """retry_after=seconds sends whole seconds (at least 1); =date sends an HTTP-date."""
    settings = SimulatorSettings.from_specs(
        [
            "rate_limit=1/1s",  # the second request of each comes well within it, even on a busy machine
            "sellapp:retry_after=seconds",
            "maple:retry_after=date",
        ]
    )
    async with simulate(settings) as client:
        await client.sellapp("1")
        assert (await client.sellapp("2")).headers["Retry-After"] == "1"
        await client.maple("1")
        before = time.time()
        header = (await client.maple("2")).headers["Retry-After"]
        retry_at = email.utils.parsedate_to_datetime(header).timestamp()
        assert header.endswith(" GMT")
        assert before <= retry_at <= before + 2
        await client.campfire("1")
        assert "Retry-After" not in (await client.campfire("2")).headers


async def test_rapyd_windows_block_after_200_a_minute() -> None:
    """With rapyd_windows, the 201st Rapyd request in a (scaled) minute gets a 429."""
    settings = SimulatorSettings.from_specs(["rapyd:rapyd_windows=true"], time_scale=0.1)
    async with simulate(settings) as client:
        for n in range(200):
            assert (await client.rapyd(f"invoice_{n}", method="GET")).status == 200
        reply = await client.rapyd("invoice_x")
        assert reply.status == 429
        assert reply.json["status"]["error_code"] == "TOO_MANY_REQUESTS"


def test_sliding_window_counts_only_accepted_requests() -> None:
    """A sliding window admits N per T at any moment and reports when a slot frees."""
    throttle = Throttle([SlidingWindow(2, 1.0)])
    assert throttle.admit(0.0) == 0
    assert throttle.admit(0.5) == 0
    assert throttle.admit(0.9) == pytest.approx(0.1)
    assert throttle.admit(1.0) == 0  # the request at 0.0 has left the window
    assert throttle.admit(1.2) == pytest.approx(0.3)
    assert throttle.admit(1.5) == 0


def test_rapyd_windows_on_a_fake_clock() -> None:
    """Rapyd: 200 a minute then blocked till the minute ends; 1000 per 5 min then 5 min off."""
    throttle = Throttle(rapyd_windows())
    assert all(throttle.admit(n * 0.01) == 0 for n in range(200))
    assert throttle.admit(30.0) == pytest.approx(30.0)
    assert throttle.admit(60.0) == 0
    for minute in range(1, 5):  # 200 in each of the next four minutes: 1000 in all
        start = minute * 60.0
        for n in range(1 if minute == 1 else 0, 200):
            assert throttle.admit(start + n * 0.01) == 0
    # The 1000th request came at 241.99 s: blocked for five minutes from then.
    assert throttle.admit(300.0) == pytest.approx(541.99 - 300.0)


def test_fixed_window_reopens_after_an_idle_period() -> None:
    """A fixed window that never filled starts afresh at the next request after it ends."""
    window = FixedWindow(2, 1.0)
    window.record(0.0)
    window.record(5.0)  # a new window: the first one ended unfilled
    assert window.wait(5.1) == 0
    window.record(5.2)
    assert window.wait(5.3) == pytest.approx(0.7)


# Credentials.


async def test_revoke_and_restore() -> None:
    """A revoked credential gets the provider's 401 until restored, in-process or over HTTP."""
    async with simulate() as client:
        client.sim.revoke("maple")
        reply = await client.maple("inv-1")
        assert reply.status == 401
        assert reply.json["error_code"] == "unauthorized"
        client.sim.restore("maple")
        assert (await client.maple("inv-1")).status == 200
        assert (await client.send("POST", "/_sim/revoke?provider=sellapp")).status == 200
        assert (await client.sellapp("1")).status == 401
        assert (await client.send("POST", "/_sim/restore?provider=sellapp")).status == 200
        assert (await client.sellapp("1")).status == 200
        unknown = await client.send("POST", "/_sim/revoke?provider=nosuch")
        assert unknown.status == 400
        assert "nosuch" in unknown.json["error"]
        with pytest.raises(ValueError, match="nosuch"):
            client.sim.revoke("nosuch")


async def test_revoke_after_n_accepted_voids() -> None:
    """revoke_after=N lets N voids through, then every request is that provider's 401."""
    async with simulate(faults(campfire=Faults(revoke_after=2))) as client:
        statuses = [(await client.campfire(str(n))).status for n in range(4)]
        assert statuses == [200, 200, 401, 401]
        assert (await client.campfire("9")).json == {"detail": "Invalid token."}
        assert (await client.void("maple", "1")).status == 200


# Injected faults.


async def test_error_rate_answers_5xx_without_voiding() -> None:
    """error_rate=1 answers 500/502/503 with the provider's error body; nothing is applied."""
    settings = faults(chargeover=Faults(error_rate=1.0), rapyd=Faults(error_rate=1.0))
    async with simulate(settings) as client:
        for n in range(6):
            reply = await client.chargeover(f"inv-{n}")
            assert reply.status in (500, 502, 503)
            assert contains(reply.json, chargeover_body(reply.status, "Internal server error."))
            rapyd = await client.rapyd(f"invoice_{n}", idempotency=f"k{n}")
            assert rapyd.status in (500, 502, 503)
            if rapyd.status != 502:  # a 502 is the gateway's plain text
                assert rapyd.json["status"]["error_code"] == "INTERNAL_ERROR"
        assert sum(client.sim.voids_applied.values()) == 0
        assert sum(client.sim.void_requests.values()) == 0
        assert client.sim.stats()["totals"]["faults"]["error"] == 12


async def test_error_fault_is_not_recorded_for_idempotency() -> None:
    """An injected 5xx happens in front of the app: the key's first real answer comes later."""
    seed = first_seed_where(lambda rng: rng.random() < 0.5)  # the first request errors
    settings = SimulatorSettings(faults={"maple": Faults(error_rate=0.5)}, seed=seed)
    async with simulate(settings) as client:
        replies = [await client.maple("inv-1", key="same") for _ in range(12)]
        statuses = [reply.status for reply in replies]
        first_ok = statuses.index(200)
        assert first_ok > 0
        assert all(status >= 500 for status in statuses[:first_ok])
        assert "Idempotency-Used" not in replies[first_ok].headers
        assert client.sim.voids_applied[("maple", "inv-1")] == 1
        assert client.sim.void_requests[("maple", "inv-1")] == 1


async def test_timeout_applies_the_void_and_never_answers_in_time() -> None:
    """timeout_rate=1 applies the void and hangs; the client times out; shutdown is prompt."""
    settings = SimulatorSettings(faults={"maple": Faults(timeout_rate=1.0)}, hang_s=30.0)
    started = time.monotonic()
    async with simulate(settings) as client:
        with pytest.raises(TimeoutError):
            await client.maple("inv-1", timeout=0.1)
        assert client.sim.invoice_state("maple", "inv-1") == "void"
        assert client.sim.voids_applied[("maple", "inv-1")] == 1
        assert client.sim.stats()["maple"]["faults"]["timeout"] == 1
    assert time.monotonic() - started < 1.5


async def test_timed_out_void_is_recorded_for_idempotency() -> None:
    """The answer a timeout withheld is the one a retry with the same key gets replayed."""
    seed = first_seed_where(lambda rng: rng.random() < 0.5 <= rng.random())
    settings = SimulatorSettings(faults={"maple": Faults(timeout_rate=0.5)}, seed=seed, hang_s=0.3)
    async with simulate(settings) as client:
        with pytest.raises(TimeoutError):
            await client.maple("inv-1", key="k", timeout=0.1)
        retry = await client.maple("inv-1", key="k")
        assert retry.status == 200
        assert retry.headers["Idempotency-Used"] == "true"
        assert client.sim.void_requests[("maple", "inv-1")] == 1


def first_seed_where(condition: Any) -> int:
    """The first seed whose generator meets `condition` (the dice draw one number per rate)."""
    return next(seed for seed in range(1000) if condition(random.Random(seed)))


async def test_reset_drops_the_connection() -> None:
    """reset_rate=1 drops every connection; for about half the void was applied first."""
    async with simulate(faults(maple=Faults(reset_rate=1.0))) as client:
        for n in range(10):
            with pytest.raises(aiohttp.ClientConnectionError):
                await client.maple(f"inv-{n}")
        applied = sum(client.sim.voids_applied.values())
        assert 0 < applied < 10
        assert sum(client.sim.void_requests.values()) == applied
        assert client.sim.stats()["maple"]["faults"]["reset"] == 10


async def test_seeded_faults_repeat() -> None:
    """The same seed gives the same sequence of answers; another seed, another sequence."""

    async def statuses(seed: int) -> list[int]:
        settings = SimulatorSettings(faults={"sellapp": Faults(error_rate=0.3, jitter_ms=0.5)}, seed=seed)
        async with simulate(settings) as client:
            return [(await client.sellapp(str(n))).status for n in range(50)]

    first = await statuses(7)
    assert first == await statuses(7)
    assert 200 in first
    assert any(status >= 500 for status in first)
    assert first != await statuses(8)


async def test_latency_delays_answers() -> None:
    """latency_ms holds every answer back at least that long."""
    async with simulate(faults(campfire=Faults(latency_ms=50))) as client:
        started = time.monotonic()
        assert (await client.campfire("1")).status == 200
        assert time.monotonic() - started >= 0.05


# Misbehaving providers.

# provider -> what its 401 quotes when the account's own, revoked, credential is presented
OWN_ECHO = {
    "chargeover": [
        "sim_co_public:sim_co_private",
        basic(**CREDENTIALS["chargeover"]),
    ],
    "rapyd": ["access_key rak_SIMULATOR, salt salt5678salt, signature "],
    "campfire": ["Invalid token: Token sim_campfire_token."],
    "maple": ["Invalid API token sim_maple_token"],
    "sellapp": ["no account has the key <sim_sellapp_key>"],
    "stripe": ["Invalid API Key provided: sk_test_SIMULATOR"],
    "recurly": ["Invalid API key: sim_recurly_private_key"],
    "maxio": ["Access denied for sim_maxio_api_key"],
    "chargebee": ["Invalid api key test_cb_SIMULATOR"],
    "lago": ["no organization has the API key sim_lago_api_key"],
    "xero": ["AuthenticationUnsuccessful: Bearer sim_xero_at_"],
    "quickbooks": ["Token Bearer sim_qbo_at_"],
}
# provider -> what its 401 quotes for `void_with_wrong_credentials`
WRONG_ECHO = {
    "chargeover": ["sim_co_public:x"],
    "rapyd": ["access_key rak_SIMULATOR"],
    "campfire": ["Token sim_sellapp_key"],
    "maple": ["sim_sellapp_key"],
    "sellapp": ["sim_maple_token"],
    "stripe": ["Invalid API Key provided: sim_sellapp_key"],
    "recurly": ["Invalid API key: sim_sellapp_key"],
    "maxio": ["Access denied for sim_sellapp_key"],
    "chargebee": ["Invalid api key sim_sellapp_key"],
    "lago": ["no organization has the API key sim_sellapp_key"],
    "xero": ["AuthenticationUnsuccessful: Bearer sim_xero_wrong"],
    "quickbooks": ["Token Bearer sim_qbo_wrong expired or invalid"],
}


@pytest.mark.parametrize("provider", PROVIDER_TYPES)
async def test_echo_credentials_quotes_the_presented_key_in_the_401(provider: str) -> None:
    """echo_credentials=true: a 401 quotes the credential presented, wrong or revoked, in the provider's own shape."""
    invoice_id, _, expected = ANSWERS[provider]["wrong_credentials"]
    async with simulate(faults(**{provider: Faults(echo_credentials=True)})) as client:
        wrong = await client.void_with_wrong_credentials(provider, invoice_id)
        client.sim.revoke(provider)
        revoked = await client.void(provider, invoice_id)
        stats = client.sim.stats()[provider]
    for reply, quoted in ((wrong, WRONG_ECHO[provider]), (revoked, OWN_ECHO[provider])):
        assert reply.status == 401
        shape = {
            k: v for k, v in expected.items() if k not in ("message", "error_message", "detail", "errors")
        }
        assert contains(reply.json, shape), reply.json
        for text in quoted:
            assert text in reply.text, reply.text
    assert stats["auth_failed"] == 2
    assert client.sim.voids_applied[(provider, invoice_id)] == 0


async def test_without_echo_credentials_no_401_quotes_a_key() -> None:
    """By default no provider's 401 quotes the credential presented."""
    own = [v for roles in CREDENTIALS.values() for v in roles.values()]
    async with simulate() as client:
        for provider in PROVIDER_TYPES:
            client.sim.revoke(provider)
            reply = await client.void(provider, "1")
            assert reply.status == 401
            assert not [value for value in own if value in reply.text]


async def test_echo_headers_makes_injected_errors_a_gateway_page_listing_the_headers() -> None:
    """echo_headers=true: injected errors are 502/503 HTML pages with the request line and every header, keys included."""
    settings = faults(
        maple=Faults(error_rate=1.0, echo_headers=True), rapyd=Faults(error_rate=1.0, echo_headers=True)
    )
    async with simulate(settings) as client:
        statuses = set()
        for n in range(8):
            reply = await client.maple(f"inv-{n}", key=f"key-{n}")
            statuses.add(reply.status)
            assert reply.headers["Content-Type"].startswith("text/html")
            assert f"<pre>POST /api/v1/companies/cmp_simulated/invoices/inv-{n}/void\n" in reply.text
            assert "\nAuthorization: Bearer sim_maple_token\n" in reply.text
            assert f"\nIdempotency-Key: key-{n}" in reply.text
        assert statuses == {502, 503}
        rapyd = await client.rapyd("invoice_1", idempotency="k")
        assert rapyd.status in (502, 503)
        headers = rapyd_headers("POST", "/v1/invoices/invoice_1/void", idempotency="k")
        for name in ("access_key", "salt", "signature"):
            assert f"\n{name}: {headers[name]}\n" in rapyd.text
        assert sum(client.sim.voids_applied.values()) == 0
        assert client.sim.stats()["totals"]["faults"]["error"] == 9


def date_header(reply: Reply) -> float:
    return email.utils.parsedate_to_datetime(reply.headers["Date"]).timestamp()


async def test_clock_skew_moves_the_date_header_and_rapyds_timestamp_window() -> None:
    """clock_skew_s=120: Rapyd's Date is 120 s ahead, a timestamp from the real clock is refused, one 120 s ahead is not."""
    async with simulate(faults(rapyd=Faults(clock_skew_s=120))) as client:
        now = time.time()
        refused = await client.rapyd("invoice_1")
        assert refused.status == 401
        assert 118 <= date_header(refused) - now <= 122
        accepted = await client.rapyd("invoice_2", timestamp=int(time.time()) + 120)
        assert accepted.status == 200
        assert 118 <= date_header(accepted) - time.time() <= 122
        assert abs(date_header(await client.maple("inv-1")) - time.time()) <= 2  # only rapyd's clock


async def test_redirect_to_answers_301_in_front_of_everything() -> None:
    """redirect_to=URL: every request, good credentials or not, gets a 301 to URL; nothing is voided or checked."""
    async with simulate(faults(sellapp=Faults(redirect_to="https://billing.example.com/api"))) as client:
        for api_key in (CREDENTIALS["sellapp"]["api_key"], "wrong"):
            async with client.session.patch(
                "/api/v2/invoices/1/mark-voided",
                headers={"Authorization": f"Bearer {api_key}"},
                allow_redirects=False,
            ) as reply:
                assert reply.status == 301
                assert reply.headers["Location"] == "https://billing.example.com/api"
        stats = client.sim.stats()["sellapp"]
        assert (stats["requests"], stats["redirected"], stats["auth_failed"]) == (2, 2, 0)
        assert client.sim.invoice_state("sellapp", "1") == "open"
        assert (await client.void("maple", "1")).status == 200


# Settings.


def test_from_specs_merges_field_by_field() -> None:
    """Specs without a provider set all five; later specs override earlier ones per field."""
    settings = SimulatorSettings.from_specs(
        [
            "error_rate=0.1,latency_ms=5",
            "rapyd:rate_limit=50/1s,retry_after=seconds,rapyd_windows=true",
            "rapyd:error_rate=0.2",
            "maple:revoke_after=3,timeout_rate=0.05,reset_rate=0.01,jitter_ms=2",
        ],
        seed=42,
        time_scale=0.5,
    )
    assert settings.seed == 42
    assert settings.time_scale == 0.5
    assert settings.faults["rapyd"] == Faults(
        error_rate=0.2,
        latency_ms=5,
        rate_limit="50/1s",
        retry_after="seconds",
        rapyd_windows=True,
    )
    assert settings.faults["maple"] == Faults(
        error_rate=0.1,
        latency_ms=5,
        revoke_after=3,
        timeout_rate=0.05,
        reset_rate=0.01,
        jitter_ms=2,
    )
    assert settings.faults["sellapp"] == Faults(error_rate=0.1, latency_ms=5)
    assert SimulatorSettings.from_specs([]).faults == {}


def test_from_specs_reads_the_misbehaviour_faults() -> None:
    """echo_credentials, echo_headers, clock_skew_s and redirect_to parse from specs like the others."""
    settings = SimulatorSettings.from_specs(
        [
            "echo_credentials=true,echo_headers=TRUE",
            "rapyd:clock_skew_s=-90.5,redirect_to=https://x.example/a?b=c",
        ]
    )
    assert settings.faults["rapyd"] == Faults(
        echo_credentials=True, echo_headers=True, clock_skew_s=-90.5, redirect_to="https://x.example/a?b=c"
    )
    assert settings.faults["maple"] == Faults(echo_credentials=True, echo_headers=True)


def test_from_specs_boolean_and_none_values() -> None:
    """rapyd_windows takes true/false and lands on rapyd only; none clears an optional field."""
    settings = SimulatorSettings.from_specs(
        ["rapyd_windows=TRUE,rate_limit=5/s", "rate_limit=none,revoke_after=none"]
    )
    assert settings.faults["rapyd"].rapyd_windows is True
    assert settings.faults["chargeover"].rapyd_windows is False
    assert settings.faults["rapyd"].rate_limit is None
    assert settings.faults["maple"].revoke_after is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50/1s", (50, 1.0)), ("10/s", (10, 1.0)), ("100/m", (100, 60.0)), ("5/0.2s", (5, 0.2))],
)
def test_parse_rate_limit(text: str, expected: tuple[int, float]) -> None:
    """Rate limits read as N per T seconds or minutes."""
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("rapid:error_rate=0.1", ["'rapid'", "chargeover, rapyd, campfire, maple, sellapp"]),
        ("eror_rate=0.1", ["'eror_rate'", "error_rate", "rate_limit", "revoke_after"]),
        ("error_rate=1.5", ["error_rate", "1.5", "0 to 1"]),
        ("latency_ms=fast", ["'fast'", "latency_ms", "milliseconds"]),
        ("rate_limit=lots", ["'lots'", "N/Ts", "N/m"]),
        ("rate_limit=0/1s", ["'0/1s'", "N >= 1"]),
        ("retry_after=soon", ["'soon'", "none", "seconds", "date"]),
        ("rapyd:rapyd_windows=yes", ["'yes'", "true | false"]),
        ("maple:rapyd_windows=true", ["rapyd_windows", "only to rapyd"]),
        ("revoke_after=-1", ["revoke_after", "-1", ">= 0"]),
        ("error_rate", ["key=value", "'error_rate'"]),
        ("maple:", ["no settings", "[PROVIDER:]key=value"]),
        ("echo_headers=1", ["'1'", "echo_headers", "true | false"]),
        ("clock_skew_s=soon", ["'soon'", "clock_skew_s", "seconds"]),
        ("redirect_to=ftp://x", ["redirect_to", "http(s) URL or a /path"]),
    ],
)
def test_from_specs_errors_name_spec_and_allowed(spec: str, fragments: list[str]) -> None:
    """Every bad spec is a ValueError naming the spec, what is wrong and what is allowed."""
    with pytest.raises(ValueError, match="fault spec") as raised:
        SimulatorSettings.from_specs(["error_rate=0.1", spec])
    message = str(raised.value)
    assert repr(spec) in message
    for fragment in fragments:
        assert fragment in message


def test_settings_validate_directly() -> None:
    """Faults and settings built in code are checked like specs, and faults are read-only."""
    with pytest.raises(ValueError, match="timeout_rate"):
        Faults(timeout_rate=2)
    with pytest.raises(ValueError, match="nosuch"):
        SimulatorSettings(faults={"nosuch": Faults()})
    with pytest.raises(ValueError, match="time_scale"):
        SimulatorSettings(time_scale=0)
    given = {"maple": Faults(error_rate=0.5)}
    settings = SimulatorSettings(faults=given)
    given.clear()
    assert settings.faults["maple"].error_rate == 0.5


# Control endpoints and inspection.


async def test_stats_endpoint_and_reset() -> None:
    """/_sim/stats reports counters (and per-invoice counts); /_sim/reset forgets everything."""
    async with simulate() as client:
        await client.void("chargeover", "inv-1")
        await client.void("chargeover", "inv-1")
        await client.void_with_wrong_credentials("sellapp", "1")
        stats = (await client.send("GET", "/_sim/stats")).json
        assert stats["chargeover"]["requests"] == 2
        assert stats["chargeover"]["voided"] == 1
        assert stats["chargeover"]["already_void"] == 1
        assert stats["sellapp"]["auth_failed"] == 1
        assert stats["totals"]["requests"] == 3
        assert stats["totals"]["faults"] == {"error": 0, "timeout": 0, "reset": 0}
        assert "void_requests" not in stats
        detailed = (await client.send("GET", "/_sim/stats?invoices=1")).json
        assert detailed["void_requests"] == {"chargeover:inv-1": 2}
        assert detailed["voids_applied"] == {"chargeover:inv-1": 1}
        assert detailed == {**client.sim.stats(), **detailed}

        assert (await client.send("POST", "/_sim/reset")).status == 200
        assert client.sim.stats()["totals"]["requests"] == 0
        assert client.sim.arrivals["chargeover"] == []
        assert not client.sim.void_requests
        assert client.sim.invoice_state("chargeover", "inv-1") == "open"
        assert (await client.void("chargeover", "inv-1")).status == 200


async def test_arrivals_record_every_request_before_checks() -> None:
    """arrivals has every provider request, rejected ones too, in monotonic time order."""
    settings = SimulatorSettings.from_specs(["campfire:rate_limit=1/10s"])
    async with simulate(settings) as client:
        before = time.monotonic()
        await client.campfire("1")
        await client.campfire("2")
        await client.campfire("3", authorization="Token nope")
        times = client.sim.arrivals["campfire"]
        assert len(times) == 3
        assert before <= times[0] <= times[1] <= times[2] <= time.monotonic()


def test_invoice_states_from_ids() -> None:
    """Invoice state comes from the id prefix; drafts exist only at Rapyd and Maple."""
    sim = Simulator()
    assert sim.invoice_state("maple", "draft-1") == "draft"
    assert sim.invoice_state("sellapp", "draft-1") == "open"
    assert sim.invoice_state("campfire", "missing-9") == "missing"
    assert sim.invoice_state("chargeover", "paid") == "paid"
    with pytest.raises(ValueError, match="nosuch"):
        sim.invoice_state("nosuch", "1")


async def test_serve_forever_reports_its_url() -> None:
    """serve_forever calls ready(base_url) once listening and serves until cancelled."""
    urls: list[str] = []
    run = functools.partial(serve_forever, "127.0.0.1", 0, SimulatorSettings(), ready=urls.append)
    async with anyio.create_task_group() as group:
        group.start_soon(run)
        with anyio.fail_after(2):
            while not urls:
                await anyio.sleep(0.01)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{urls[0]}/_sim/stats") as response,
        ):
            assert response.status == 200
        group.cancel_scope.cancel()
    assert urls[0].startswith("http://127.0.0.1:")


async def test_serve_forever_leaves_its_start_up_heap_out_of_the_collections() -> None:
    """A full collection of the start-up heap held the simulator's loop 36-51 ms: the requests
    arriving meanwhile were stamped together, and a client at the limit drew 429s it did not
    earn (`python -m bench --only pace`). While it serves, that heap is frozen and the young
    generation collected rarely; the process's settings are back once it stops."""
    during: list[tuple[int, int]] = []
    run = functools.partial(
        serve_forever,
        "127.0.0.1",
        0,
        SimulatorSettings(),
        ready=lambda _: during.append((gc.get_freeze_count(), gc.get_threshold()[0])),
    )
    before = gc.get_threshold()
    async with anyio.create_task_group() as group:
        group.start_soon(run)
        with anyio.fail_after(2):
            while not during:
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    frozen, young = during[0]
    assert frozen > 10_000  # aiohttp and batchvoid alone are tens of thousands of objects
    assert young == YOUNG_COLLECTION_AT
    assert (gc.get_freeze_count(), gc.get_threshold()) == (0, before)


def test_serves_again_on_a_new_event_loop_keeping_state() -> None:
    """A simulator can be served again, even from another event loop; its invoices persist."""
    sim = Simulator()
    headers = {"Authorization": "Bearer " + CREDENTIALS["sellapp"]["api_key"]}

    async def void_once() -> int:
        async with (
            sim.serve() as url,
            aiohttp.ClientSession() as session,
            session.patch(f"{url}/api/v2/invoices/5/mark-voided", headers=headers) as response,
        ):
            return response.status

    assert anyio.run(void_once) == 200
    assert anyio.run(void_once) == 422
    assert sim.voids_applied[("sellapp", "5")] == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rate_limit=2000000/1s", "the count must be at most 1,000,000 requests per window"),
        ("rate_limit=" + "9" * 5000 + "/1s", "the count must be at most 1,000,000"),
        ("rate_limit=1/" + "9" * 400 + "s", "the period must be from 1ms to 24h"),
        ("rate_limit=1/1441m", "the period must be from 1ms to 24h"),
    ],
)
def test_an_absurd_simulator_rate_limit_is_refused_as_a_profile_one_is(spec: str, message: str) -> None:
    """A --fault rate limit past 1,000,000 per window or outside 1 ms..24 h is a clear error, the spec cut short."""
    with pytest.raises(ValueError, match=message) as caught:
        SimulatorSettings.from_specs([spec])
    assert len(str(caught.value)) < 600


@pytest.mark.parametrize("skew", ["1e308", "-315576001"])
def test_a_clock_skew_past_ten_years_is_refused(skew: str) -> None:
    """clock_skew_s=1e308 put the simulator's clock past what a Date header or a timestamp can
    hold: every request's handler raised, with a traceback on the terminal. Now it is refused."""
    with pytest.raises(
        ValueError, match=r"clock_skew_s must be a number of seconds from -315576000 to 315576000"
    ):
        SimulatorSettings.from_specs([f"rapyd:clock_skew_s={skew}"])
    assert SimulatorSettings.from_specs(["clock_skew_s=-315576000"]).faults


async def test_a_request_past_the_documented_most_in_flight_is_answered_429() -> None:
    """Maxio takes at most 4 requests at once per site: a fifth, while four are in hand, is a 429
    (as are Xero's sixth and QuickBooks' eleventh: each lane's cap is its facts' max_in_flight)."""
    async with simulate(faults(maxio=Faults(latency_ms=300))) as client:
        replies = []
        async with anyio.create_task_group() as tasks:
            for n in range(5):
                tasks.start_soon(lambda n=n: _append(replies, client.maxio(f"inv_{n}")))
        assert sorted(reply.status for reply in replies) == [200, 200, 200, 200, 429]
        assert client.sim.stats()["maxio"]["throttled"] == 1
        assert (await client.maxio("inv_9")).status == 200  # the four done, room again
    caps = {name: lane.max_in_flight for name, lane in Simulator()._lanes.items() if lane.max_in_flight}
    assert caps == {"maxio": 4, "xero": 5, "quickbooks": 10}


async def _append(replies: list[Any], reply: Awaitable[Any]) -> None:
    replies.append(await reply)


async def test_a_simulator_bug_is_a_500_that_says_so_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception inside the simulator's handling (its bug, not a provider's answer) is answered
    500 naming it; aiohttp's server logger prints no traceback on the terminal."""

    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Lane, "decide", broken)
    async with simulate() as client:
        reply = await client.campfire("inv_1")
    assert reply.status == 500
    assert "simulator error: RuntimeError('boom')" in reply.text
    assert not [r for r in caplog.records if r.name.startswith("aiohttp")]
