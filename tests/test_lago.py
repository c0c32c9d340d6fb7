"""Lago: the exact request, every documented answer's outcome, its regions, and runs on the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchvoid.config import load
from batchvoid.errors import ConfigError
from batchvoid.models import Item, Outcome, OutcomeKind, Response
from batchvoid.providers import REGISTRY
from batchvoid.simulator import Faults, Simulator, SimulatorSettings
from tests.conftest import job, run_on, sim_config, write

pytestmark = pytest.mark.anyio

KEY = "bv1-0123456789abcdef0123456789abcdef0123456789abcdef"
API_KEY = "lago_key_abc123"
ITEM = Item(2, "lago", "1a2b/../x")


def adapter(base_url: str = "https://api.getlago.com") -> Any:
    return REGISTRY["lago"].build(base_url, {"api_key": API_KEY}, {})


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, json.dumps(body).encode())


def error(status: int, code: str, text: str = "Error", headers: dict[str, str] | None = None) -> Response:
    return answer(status, {"status": status, "error": text, "code": code}, headers)


def test_the_void_request_is_a_bodiless_post_with_the_bearer_key_and_no_idempotency_header() -> None:
    """A plain void: no body (never generate_credit_note), Bearer key, nothing carries the item's key."""
    request = adapter().void_request(ITEM, KEY)
    assert request.method == "POST"
    assert request.url == "https://api.getlago.com/api/v1/invoices/1a2b%2F..%2Fx/void"
    assert request.headers == {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
    assert request.body is None
    assert request.secrets == (API_KEY,)
    assert adapter().void_request(ITEM, KEY) == request


def test_the_read_is_a_get_of_the_invoice() -> None:
    """The read is Lago's findInvoice, on the profile's base URL (here a self-hosted one)."""
    request = adapter("https://lago.example.com").lookup_request(ITEM)
    assert (request.method, request.url, request.body) == (
        "GET",
        "https://lago.example.com/api/v1/invoices/1a2b%2F..%2Fx",
        None,
    )
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize(
    ("response", "kind", "check"),
    [
        (answer(200, {"invoice": {"lago_id": "1a2b", "status": "voided"}}), OutcomeKind.VOIDED, False),
        (answer(200, {"invoice": {"lago_id": "1a2b", "status": "finalized"}}), OutcomeKind.REJECTED, False),
        (error(405, "not_voidable", "Method Not Allowed"), OutcomeKind.REJECTED, True),
        (error(405, "not_allowed", "Method Not Allowed"), OutcomeKind.REJECTED, False),
        (error(404, "invoice_not_found", "Not Found"), OutcomeKind.REJECTED, False),
        (error(422, "validation_errors", "Unprocessable Entity"), OutcomeKind.REJECTED, False),
        (answer(401, {"status": 401, "error": "Unauthorized"}), OutcomeKind.AUTH_FAILED, False),
        (error(429, "too_many_requests"), OutcomeKind.THROTTLED, False),
        (error(500, "internal_error"), OutcomeKind.RETRYABLE, False),
    ],
)
def test_each_documented_answer_has_its_outcome(response: Response, kind: OutcomeKind, check: bool) -> None:
    """Each of Lago's answers has its outcome; only 405 not_voidable asks for a read."""
    outcome = adapter().parse_void(ITEM, response)
    assert (outcome.kind, outcome.check_status) == (kind, check)


def test_answers_word_lagos_code_and_details_and_name_the_invoice() -> None:
    """The reference is the lago_id; a reason is `code: error`, plus a 422's error_details."""
    voided = adapter().parse_void(ITEM, answer(200, {"invoice": {"lago_id": "1a2b", "status": "voided"}}))
    assert voided == Outcome(OutcomeKind.VOIDED, "", 200, "1a2b")
    details = {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors"}
    bad = adapter().parse_void(ITEM, answer(422, {**details, "error_details": {"invoice": ["bad"]}}))
    assert bad.reason == "HTTP 422: validation_errors: Unprocessable Entity (invoice: ['bad'])"


def test_a_401_says_the_key_must_be_of_the_region_it_is_sent_to() -> None:
    """A US key sent to the EU cloud is refused like a wrong one: the reason says to check the region."""
    refused = adapter("https://api.eu.getlago.com").parse_void(
        ITEM, answer(401, {"status": 401, "error": "Unauthorized"})
    )
    assert refused.kind is OutcomeKind.AUTH_FAILED
    assert refused.reason == (
        "HTTP 401: Unauthorized (a Lago key works only in its organization's region: check region or "
        "base_url too; here https://api.eu.getlago.com)"
    )


def test_a_429_waits_for_x_ratelimit_reset_unless_retry_after_says_otherwise() -> None:
    """Lago sends no Retry-After: its X-RateLimit-Reset (seconds) is the wait; a Retry-After wins."""
    reset = adapter().parse_void(ITEM, error(429, "too_many_requests", headers={"X-RateLimit-Reset": "3"}))
    assert (reset.kind, reset.retry_after) == (OutcomeKind.THROTTLED, 3.0)
    both = {"X-RateLimit-Reset": "3", "Retry-After": "7"}
    assert adapter().parse_void(ITEM, error(429, "too_many_requests", headers=both)).retry_after == 7.0
    assert adapter().parse_void(ITEM, error(429, "too_many_requests")).retry_after is None
    bogus = {"X-RateLimit-Reset": "soon"}
    assert adapter().parse_void(ITEM, error(429, "too_many_requests", headers=bogus)).retry_after is None
    rejected = adapter().parse_void(ITEM, error(405, "not_voidable"))
    read = adapter().parse_lookup(ITEM, error(429, "x", headers={"X-RateLimit-Reset": "2"}), rejected)
    assert (read.kind, read.retry_after) == (OutcomeKind.THROTTLED, 2.0)


def test_not_voidable_is_settled_by_the_invoice_status() -> None:
    """405 not_voidable (a second void, or a draft's): already void only when the read says 'voided'."""
    rejected = adapter().parse_void(ITEM, error(405, "not_voidable", "Method Not Allowed"))
    assert rejected.reason == "HTTP 405: not_voidable: Method Not Allowed"
    read = adapter().parse_lookup
    assert (
        read(ITEM, answer(200, {"invoice": {"status": "voided"}}), rejected).kind is OutcomeKind.ALREADY_VOID
    )
    draft = read(ITEM, answer(200, {"invoice": {"status": "draft", "payment_status": "pending"}}), rejected)
    assert (draft.kind, draft.reason) == (OutcomeKind.REJECTED, f"{rejected.reason} (invoice status: draft)")
    paid = read(
        ITEM, answer(200, {"invoice": {"status": "finalized", "payment_status": "succeeded"}}), rejected
    )
    assert paid.reason.endswith("(invoice status: finalized, payment_status: succeeded)")
    assert read(ITEM, error(404, "invoice_not_found"), rejected) == rejected


@pytest.mark.parametrize(
    ("table", "base_url"),
    [
        ("", "https://api.getlago.com"),
        ('region = "us"\n', "https://api.getlago.com"),
        ('region = "eu"\n', "https://api.eu.getlago.com"),
        ('base_url = "https://lago.example.com/"\n', "https://lago.example.com"),
    ],
)
def test_a_region_or_a_self_hosted_base_url_says_where_lago_is(
    tmp_path: Path, table: str, base_url: str
) -> None:
    """No key: the US cloud; region picks a cloud; base_url names a self-hosted Lago."""
    config = write(tmp_path / "c.toml", f'[providers.lago]\ntype = "lago"\n{table}')
    assert load(config).profiles["lago"].base_url == base_url


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'region = "apac"\n',
            r"region must be one of 'us', 'eu', got 'apac'; for a self-hosted Lago, set base_url",
        ),
        (
            'region = "eu"\nbase_url = "https://lago.example.com"\n',
            "base_url and region both say where Lago is",
        ),
        ("region = 1\n", "region must be one of 'us', 'eu', got 1"),
    ],
)
def test_a_wrong_region_is_a_config_error_naming_the_choices(
    tmp_path: Path, table: str, message: str
) -> None:
    """An unknown region, or region with base_url, is refused naming the profile and the choices."""
    config = write(tmp_path / "c.toml", f'[providers.lago]\ntype = "lago"\n{table}')
    with pytest.raises(ConfigError, match=rf"\[providers\.lago\]: {message}"):
        load(config)


def test_only_a_provider_with_regions_takes_region(tmp_path: Path) -> None:
    """`region` is a key only where the provider has named regions."""
    config = write(tmp_path / "c.toml", '[providers.s]\ntype = "stripe"\nregion = "eu"\n')
    with pytest.raises(ConfigError, match="unknown key 'region'"):
        load(config)


def states(counts: Any) -> dict[str, int]:
    return {state.value: n for (_, state), n in counts.items()}


async def test_a_run_on_the_simulator_confirms_not_voidable_by_reading(tmp_path: Path) -> None:
    """Open voided, void confirmed by the read; draft and paid (both also not_voidable) failed naming
    what the read said; missing failed without a read."""
    simulator = Simulator()
    rows = [("lago", i) for i in ("lg_1", "void_1", "draft_1", "paid_1", "missing_1")]
    async with simulator.serve() as url:
        report = await run_on(sim_config(url), job(tmp_path, rows), tmp_path)
        stats = simulator.stats()["lago"]
    assert states(report.counts) == {"voided": 1, "already_void": 1, "failed": 3}
    assert stats["lookups"] == 3
    assert report.requests == 5 + 3
    log = (tmp_path / "job.csv.log").read_text()
    assert "(invoice status: draft)" in log
    assert "(invoice status: finalized, payment_status: succeeded)" in log
    assert "invoice_not_found" in log


async def test_a_rerun_after_the_void_is_answered_not_voidable_and_confirmed(tmp_path: Path) -> None:
    """With no idempotency header, a void sent again (its first answer lost) is confirmed by the read."""
    simulator = Simulator()
    async with simulator.serve() as url:
        first = await run_on(sim_config(url), job(tmp_path, [("lago", "lg_1")]), tmp_path)
        again = await run_on(sim_config(url), job(tmp_path, [("lago", "lg_1")], "again.csv"), tmp_path)
        stats = simulator.stats()["lago"]
    assert states(first.counts) == {"voided": 1}
    assert states(again.counts) == {"already_void": 1}
    assert (stats["already_void"], stats["lookups"]) == (1, 1)
    assert simulator.voids_applied[("lago", "lg_1")] == 1


def test_a_self_hosted_base_url_with_lagos_own_api_v1_is_refused(tmp_path: Path) -> None:
    """Lago's docs give self-hosted URLs as host + /api/v1; batchvoid adds that itself, so it says so."""
    config = write(
        tmp_path / "c.toml",
        '[providers.lago]\ntype = "lago"\nbase_url = "https://lago.example.com/api/v1/"\n',
    )
    with pytest.raises(
        ConfigError, match=r"base_url ends with /api/v1, .* write base_url = 'https://lago.example.com'"
    ):
        load(config)
    write(config, '[providers.lago]\ntype = "lago"\nbase_url = "https://example.com/lago"\n')
    assert load(config).profiles["lago"].base_url == "https://example.com/lago"  # a path of its own is fine


def test_a_missing_invoice_whose_id_is_no_uuid_says_lago_wants_its_lago_id() -> None:
    """An invoice number in the job file answers 404: the reason says Lago's ids are UUIDs."""
    missing = error(404, "invoice_not_found", "Not Found")
    number = adapter().parse_void(Item(2, "lago", "INV-2026-0001"), missing)
    assert number.reason == (
        "HTTP 404: invoice_not_found: Not Found: Lago's invoice ids are UUIDs (its lago_id), not invoice numbers"
    )
    uuid = adapter().parse_void(Item(2, "lago", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"), missing)
    assert uuid.reason == "HTTP 404: invoice_not_found: Not Found"


async def test_lost_answers_never_void_twice_and_every_item_ends_done(tmp_path: Path) -> None:
    """No idempotency header: a void whose answer was lost is sent again, answered not_voidable, and
    confirmed by the read; each invoice is voided once."""
    settings = SimulatorSettings(faults={"lago": Faults(timeout_rate=0.5)}, seed=5, hang_s=0.3)
    simulator = Simulator(settings)
    rows = [("lago", f"lg_{n}") for n in range(8)]
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, timeout_s=0.1, max_attempts=20), job(tmp_path, rows), tmp_path)
        stats = simulator.stats()["lago"]
    done = states(report.counts)
    assert sum(done.values()) == 8
    assert set(done) <= {"voided", "already_void"}
    assert done.get("already_void", 0) > 0  # some answers were lost after the void: the read said voided
    assert stats["lookups"] >= done["already_void"]  # each confirmed by a read (a lost one, read again)
    assert sorted(simulator.voids_applied.values()) == [1] * 8
