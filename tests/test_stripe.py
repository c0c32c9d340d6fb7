"""Stripe: the exact request, every documented answer's outcome, and runs on the simulator."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from batchvoid.models import Item, Outcome, OutcomeKind, Response
from batchvoid.providers import REGISTRY
from batchvoid.simulator import Faults, Simulator, SimulatorSettings
from tests.conftest import job, run_on, sim_config

pytestmark = pytest.mark.anyio

KEY = "bv1-0123456789abcdef0123456789abcdef0123456789abcdef"
SECRET = "sk_test_abc123"
ITEM = Item(2, "stripe", "in_1/../x")


def adapter() -> Any:
    return REGISTRY["stripe"].build("https://api.stripe.com", {"secret_key": SECRET}, {})


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, json.dumps(body).encode())


def error(status: int, error_type: str, code: str, message: str = "msg") -> Response:
    return answer(status, {"error": {"type": error_type, "code": code, "message": message}})


def test_the_void_request_is_form_encoded_basic_with_the_secret_key_and_carries_the_key() -> None:
    request = adapter().void_request(ITEM, KEY)
    assert request.method == "POST"
    assert request.url == "https://api.stripe.com/v1/invoices/in_1%2F..%2Fx/void"
    basic = "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode()
    assert request.headers == {
        "Authorization": basic,
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
        "Idempotency-Key": KEY,
    }
    assert request.body == b""
    assert set(request.secrets) == {basic, SECRET}
    assert adapter().void_request(ITEM, KEY) == request  # the same key on every attempt


def test_the_read_is_a_get_of_the_invoice_without_a_key() -> None:
    request = adapter().lookup_request(ITEM)
    assert (request.method, request.url, request.body) == (
        "GET",
        "https://api.stripe.com/v1/invoices/in_1%2F..%2Fx",
        None,
    )
    assert "Idempotency-Key" not in request.headers
    assert request.headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("response", "kind", "check"),
    [
        (answer(200, {"id": "in_1", "status": "void"}), OutcomeKind.VOIDED, False),
        (answer(200, {"id": "in_1", "status": "open"}), OutcomeKind.REJECTED, False),
        (error(400, "invalid_request_error", "invoice_not_open"), OutcomeKind.REJECTED, True),
        (error(404, "invalid_request_error", "resource_missing"), OutcomeKind.REJECTED, False),
        (error(400, "idempotency_error", "idempotency_key_in_use"), OutcomeKind.REJECTED, False),
        (error(409, "invalid_request_error", "lock_timeout"), OutcomeKind.RETRYABLE, False),
        (error(401, "invalid_request_error", "api_key_invalid"), OutcomeKind.AUTH_FAILED, False),
        (error(429, "invalid_request_error", "rate_limit"), OutcomeKind.THROTTLED, False),
        (error(500, "api_error", "api_error"), OutcomeKind.RETRYABLE, False),
        (
            Response(500, {"Stripe-Should-Retry": "false"}, b'{"error":{"type":"api_error"}}'),
            OutcomeKind.REJECTED,
            False,
        ),
    ],
)
def test_each_documented_answer_has_its_outcome(response: Response, kind: OutcomeKind, check: bool) -> None:
    outcome = adapter().parse_void(ITEM, response)
    assert (outcome.kind, outcome.check_status) == (kind, check)


def test_a_state_error_is_settled_by_the_invoice_status() -> None:
    rejected = adapter().parse_void(ITEM, error(400, "invalid_request_error", "invoice_not_open", "not open"))
    assert rejected.reason == "HTTP 400: invoice_not_open: not open"
    void = adapter().parse_lookup(ITEM, answer(200, {"status": "void"}), rejected)
    assert void.kind is OutcomeKind.ALREADY_VOID
    paid = adapter().parse_lookup(ITEM, answer(200, {"status": "paid"}), rejected)
    assert paid == Outcome(
        OutcomeKind.REJECTED, "HTTP 400: invoice_not_open: not open (invoice status: paid)", 400
    )
    assert adapter().parse_lookup(ITEM, error(503, "api_error", "x"), rejected).kind is OutcomeKind.RETRYABLE


def states(counts: Any) -> dict[str, int]:
    return {state.value: n for (_, state), n in counts.items()}


async def test_a_run_on_the_simulator_confirms_already_void_by_reading(tmp_path: Path) -> None:
    """Open voided, void confirmed by the read, paid and draft failed naming their status, missing failed."""
    simulator = Simulator()
    rows = [("stripe", i) for i in ("in_1", "void_1", "paid_1", "draft_1", "missing_1")]
    async with simulator.serve() as url:
        report = await run_on(sim_config(url), job(tmp_path, rows), tmp_path)
        stats = simulator.stats()["stripe"]
    assert states(report.counts) == {"voided": 1, "already_void": 1, "failed": 3}
    assert stats["lookups"] == 3  # void_1, paid_1 and draft_1 answered a state error: each read once
    assert report.requests == 5 + 3  # the reads count as requests (and against the limits)
    log = (tmp_path / "job.csv.log").read_text()
    assert "(invoice status: paid)" in log
    assert "(invoice status: draft)" in log


async def test_a_lost_answer_is_retried_with_the_same_key_and_replayed(tmp_path: Path) -> None:
    """A timeout after Stripe voided: the retry carries the same Idempotency-Key, so Stripe replays
    its 200 (a new key would void again and be answered a state error instead)."""
    settings = SimulatorSettings(faults={"stripe": Faults(timeout_rate=0.5)}, seed=5, hang_s=0.3)
    simulator = Simulator(settings)
    rows = [("stripe", f"in_{n}") for n in range(8)]
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, timeout_s=0.1, max_attempts=20), job(tmp_path, rows), tmp_path)
        stats = simulator.stats()["stripe"]
    assert states(report.counts) == {"voided": 8}
    assert stats["idempotent_replays"] > 0
    assert stats["lookups"] == 0
