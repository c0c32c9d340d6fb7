"""Chargebee: the exact request, every documented answer's outcome, its row fields and limits,
and runs on the simulator."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from batchvoid.config import Profile, Settings, load
from batchvoid.errors import ConfigError
from batchvoid.jobfile import read
from batchvoid.models import Item, Outcome, OutcomeKind, Response, RowError
from batchvoid.preflight import target
from batchvoid.providers import REGISTRY
from batchvoid.simulator import CREDENTIALS, Faults, Simulator, SimulatorSettings
from batchvoid.simulator.exchange import Action, Incoming
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook
from batchvoid.simulator.providers.chargebee import REPLAY_WINDOW_S, Chargebee
from batchvoid.simulator.stats import Tally
from tests.conftest import run_on, sim_config, write

pytestmark = pytest.mark.anyio

KEY = "bv1-0123456789abcdef0123456789abcdef0123456789abcdef"
API_KEY = "live_abc123"
SITE = "https://acme.chargebee.com"
ITEM = Item(2, "chargebee", "inv_1/../x")
BASIC = "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()


def adapter(**options: str) -> Any:
    return REGISTRY["chargebee"].build(SITE, {"api_key": API_KEY}, options)


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, json.dumps(body).encode())


def error(status: int, code: str, message: str = "msg", **extra: str) -> Response:
    body = {"message": message, "api_error_code": code, "http_status_code": status, **extra}
    return answer(status, body)


def test_the_void_request_is_form_encoded_basic_with_the_api_key_and_carries_the_key() -> None:
    """POST to the site's own host, Basic with the key and an empty password, the idempotency header."""
    request = adapter().void_request(ITEM, KEY)
    assert request.method == "POST"
    assert request.url == "https://acme.chargebee.com/api/v2/invoices/inv_1%2F..%2Fx/void"
    assert request.headers == {
        "Authorization": BASIC,
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
        "chargebee-idempotency-key": KEY,
    }
    assert request.body == b""  # both fields are optional: nothing to send
    assert set(request.secrets) == {BASIC, API_KEY}
    assert adapter().void_request(ITEM, KEY) == request  # the same key on every attempt


def test_the_reason_code_and_comment_come_from_the_row_else_the_profile() -> None:
    """A row's void_reason_code / comment overrides the profile's; a blank cell takes the profile's."""
    profile = adapter(void_reason_code="other", comment="month-end")
    assert profile.void_request(ITEM, KEY).body == b"void_reason_code=other&comment=month-end"
    row = ITEM._replace(metadata={"void_reason_code": " duplicate ", "comment": "a&b = c, 100%"})
    assert profile.void_request(row, KEY).body == b"void_reason_code=duplicate&comment=a%26b+%3D+c%2C+100%25"
    blank = ITEM._replace(metadata={"void_reason_code": "  ", "comment": ""})
    assert profile.void_request(blank, KEY).body == b"void_reason_code=other&comment=month-end"
    only_row = ITEM._replace(metadata={"comment": "billed twice"})
    assert adapter().void_request(only_row, KEY).body == b"comment=billed+twice"


def test_a_business_entity_is_named_in_every_request_and_is_part_of_the_target() -> None:
    """On a multi-entity site the profile's business_entity_id goes with the void and the read,
    as chargebee-business-entity-id; a profile without one sends no such header. The entity says
    whose invoices they are: part of the recorded target, so a change of it is a changed target."""
    entity = adapter(business_entity_id="acme-eu")
    assert entity.void_request(ITEM, KEY).headers["chargebee-business-entity-id"] == "acme-eu"
    assert entity.lookup_request(ITEM).headers["chargebee-business-entity-id"] == "acme-eu"
    assert "chargebee-business-entity-id" not in adapter().void_request(ITEM, KEY).headers
    spec = REGISTRY["chargebee"]
    profile = Profile("cb", spec, SITE, {}, {"business_entity_id": "acme-eu"}, (), Settings())
    assert target(profile) == f"chargebee at {SITE}, business_entity_id acme-eu"


def test_the_read_is_a_get_of_the_invoice_without_a_key() -> None:
    """The read is Chargebee's retrieve of the invoice, on the same host, with no body and no key."""
    request = adapter().lookup_request(ITEM)
    assert (request.method, request.url, request.body) == (
        "GET",
        "https://acme.chargebee.com/api/v2/invoices/inv_1%2F..%2Fx",
        None,
    )
    assert "chargebee-idempotency-key" not in request.headers
    assert request.headers["Authorization"] == BASIC


@pytest.mark.parametrize(
    ("response", "kind", "check"),
    [
        (answer(200, {"invoice": {"id": "inv_1", "status": "voided"}}), OutcomeKind.VOIDED, False),
        (answer(200, {"invoice": {"id": "inv_1", "status": "posted"}}), OutcomeKind.REJECTED, False),
        (answer(200, {"id": "inv_1", "status": "voided"}), OutcomeKind.REJECTED, False),  # not nested
        (error(409, "invalid_state_for_request"), OutcomeKind.REJECTED, True),
        (error(409, "duplicate_entry"), OutcomeKind.REJECTED, False),
        (error(404, "resource_not_found"), OutcomeKind.REJECTED, False),
        (error(400, "param_wrong_value", param="void_reason_code"), OutcomeKind.REJECTED, False),
        (error(401, "api_authentication_failed"), OutcomeKind.AUTH_FAILED, False),
        (error(403, "api_authorization_failed"), OutcomeKind.AUTH_FAILED, False),
        (error(429, "api_request_limit_exceeded"), OutcomeKind.THROTTLED, False),
        (error(429, "lock_timeout"), OutcomeKind.RETRYABLE, False),
        (error(500, "internal_error"), OutcomeKind.RETRYABLE, False),
        (error(503, "internal_temporary_error"), OutcomeKind.RETRYABLE, False),
    ],
)
def test_each_documented_answer_has_its_outcome(response: Response, kind: OutcomeKind, check: bool) -> None:
    """Each of Chargebee's answers has its outcome; only invalid_state_for_request asks for a read."""
    outcome = adapter().parse_void(ITEM, response)
    assert (outcome.kind, outcome.check_status) == (kind, check)


def test_a_voided_answer_names_the_invoice_and_an_error_its_code_and_parameter() -> None:
    """The reference is Chargebee's invoice id; a parameter error says which parameter."""
    voided = adapter().parse_void(ITEM, answer(200, {"invoice": {"id": "inv_1", "status": "voided"}}))
    assert voided == Outcome(OutcomeKind.VOIDED, "", 200, "inv_1")
    bad = adapter().parse_void(ITEM, error(400, "param_wrong_value", "invalid value", param="comment"))
    assert bad.reason == "HTTP 400: param_wrong_value: invalid value (parameter: comment)"


def test_a_state_error_is_settled_by_the_invoice_status() -> None:
    """409 invalid_state_for_request: already void only when the read says 'voided'."""
    rejected = adapter().parse_void(ITEM, error(409, "invalid_state_for_request", "not allowed"))
    assert rejected.reason == "HTTP 409: invalid_state_for_request: not allowed"
    void = adapter().parse_lookup(ITEM, answer(200, {"invoice": {"status": "voided"}}), rejected)
    assert void.kind is OutcomeKind.ALREADY_VOID
    paid = adapter().parse_lookup(ITEM, answer(200, {"invoice": {"status": "paid"}}), rejected)
    assert paid == Outcome(
        OutcomeKind.REJECTED, "HTTP 409: invalid_state_for_request: not allowed (invoice status: paid)", 409
    )
    assert adapter().parse_lookup(ITEM, error(503, "x"), rejected).kind is OutcomeKind.RETRYABLE
    assert adapter().parse_lookup(ITEM, error(404, "resource_not_found"), rejected) == rejected


def test_the_base_url_is_required_and_a_too_long_comment_refused_in_config_and_job_file(
    tmp_path: Path,
) -> None:
    """Each site has its own host (the message shows its form); a comment over 300 is caught before sending."""
    config = write(tmp_path / "c.toml", '[providers.cb]\ntype = "chargebee"\n')
    with pytest.raises(
        ConfigError, match=r"base_url is required for Chargebee .*https://\{site\}\.chargebee\.com"
    ):
        load(config)
    write(config, '[providers.cb]\ntype = "chargebee"\nbase_url = "https://acme.chargebee.com/api/v2"\n')
    with pytest.raises(ConfigError, match="base_url ends with /api/v2, which batchvoid adds itself"):
        load(config)  # the SDK's base URL, copied
    write(config, f'[providers.cb]\ntype = "chargebee"\nbase_url = "{SITE}"\ncomment = "{"x" * 301}"\n')
    with pytest.raises(ConfigError, match="comment is 301 characters long; Chargebee takes at most 300"):
        load(config)
    write(config, f'[providers.cb]\ntype = "chargebee"\nbase_url = "{SITE}"\nvoid_reason_code = "other"\n')
    profiles = load(config).profiles
    assert profiles["cb"].options == {"void_reason_code": "other"}
    jobs = write(
        tmp_path / "j.csv", f"provider,invoice_id,comment\ncb,inv_1,{'y' * 301}\ncb,inv_2,{'y' * 300}\n"
    )
    got = list(read(jobs, profiles))
    assert isinstance(got[0], RowError)
    assert got[0].line == 2
    assert "comment is 301 characters long; the provider takes at most 300" in got[0].message
    assert isinstance(got[1], Item)
    jsonl = write(
        tmp_path / "j.jsonl", json.dumps({"provider": "cb", "invoice_id": "i", "comment": "z" * 301})
    )
    (row,) = read(jsonl, profiles)
    assert isinstance(row, RowError)
    assert "at most 300" in row.message


def states(counts: Any) -> dict[str, int]:
    return {state.value: n for (_, state), n in counts.items()}


async def test_a_run_on_the_simulator_sends_the_fields_and_confirms_already_void_by_reading(
    tmp_path: Path,
) -> None:
    """Open voided (a good reason code too), void confirmed by the read, paid and pending failed naming
    their status, missing failed, an unknown reason code failed in Chargebee's words (not read)."""
    rows = [
        ("cb_1", "duplicate", ""),
        ("cb_2", "", "billed twice"),
        ("void_1", "", ""),
        ("paid_1", "", ""),
        ("draft_1", "", ""),
        ("missing_1", "", ""),
        ("cb_3", "Duplicate", ""),  # codes are case-sensitive
    ]
    job_file = write(
        tmp_path / "job.csv",
        "provider,invoice_id,void_reason_code,comment\n"
        + "".join(f"chargebee,{i},{r},{c}\n" for i, r, c in rows),
    )
    simulator = Simulator()
    async with simulator.serve() as url:
        report = await run_on(sim_config(url), job_file, tmp_path)
        stats = simulator.stats()["chargebee"]
    assert states(report.counts) == {"voided": 2, "already_void": 1, "failed": 4}
    assert stats["lookups"] == 3  # void_1, paid_1 and draft_1 answered a state error: each read once
    assert report.requests == 7 + 3  # the reads count as requests (and against the limits)
    log = (tmp_path / "job.csv.log").read_text()
    assert "(invoice status: paid)" in log
    assert "(invoice status: pending)" in log
    assert "invalid reason code 'Duplicate'" in log


async def test_a_lost_answer_is_retried_with_the_same_key_and_replayed(tmp_path: Path) -> None:
    """A timeout after Chargebee voided: the retry carries the same key, so Chargebee replays its 200."""
    settings = SimulatorSettings(faults={"chargebee": Faults(timeout_rate=0.5)}, seed=5, hang_s=0.3)
    simulator = Simulator(settings)
    rows = "".join(f"chargebee,cb_{n},other\n" for n in range(8))
    job_file = write(tmp_path / "job.csv", "provider,invoice_id,void_reason_code\n" + rows)
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, timeout_s=0.1, max_attempts=20), job_file, tmp_path)
        stats = simulator.stats()["chargebee"]
    assert states(report.counts) == {"voided": 8}
    assert stats["idempotent_replays"] > 0
    assert stats["lookups"] == 0
    assert sum(simulator.voids_applied.values()) == 8


def incoming(wall: float, key: str = KEY, body: bytes = b"") -> Incoming:
    headers = {
        "Authorization": BASIC,
        "Content-Type": "application/x-www-form-urlencoded",
        "chargebee-idempotency-key": key,
    }
    path = "/api/v2/invoices/cb_1/void"
    return Incoming("POST", path, headers, {"invoice_id": "cb_1"}, body, wall)


def test_the_simulated_site_replays_a_key_for_30_minutes_then_answers_afresh() -> None:
    """Within the window the first 200 comes back marked replayed; after it, a void of a voided invoice."""
    site = Chargebee(CREDENTIALS["chargebee"]["api_key"])
    book, replays = InvoiceBook(["chargebee"]), IdempotencyStore()
    first = site.answer(Action.VOID, incoming(1000.0), book, replays)
    assert (first.status, first.tally) == (200, Tally.VOIDED)
    again = site.answer(Action.VOID, incoming(1000.0 + REPLAY_WINDOW_S - 1), book, replays)
    assert (again.status, again.tally, again.body) == (200, Tally.IDEMPOTENT_REPLAYS, first.body)
    assert again.headers["chargebee-idempotency-replayed"] == "true"
    other = site.answer(Action.VOID, incoming(1000.0 + 10, body=b"comment=x"), book, replays)
    assert (other.status, other.tally) == (409, Tally.REJECTED)  # the same key, other parameters
    late = site.answer(Action.VOID, incoming(1000.0 + REPLAY_WINDOW_S + 1), book, replays)
    assert (late.status, late.tally) == (409, Tally.ALREADY_VOID)
    assert json.loads(late.body)["api_error_code"] == "invalid_state_for_request"
    assert book.voids_applied[("chargebee", "cb_1")] == 1
    long_key = site.answer(Action.VOID, incoming(1.0, key="k" * 101), book, replays)
    assert long_key.status == 400
