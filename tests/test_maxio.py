"""Maxio: the exact request, the required reason, every documented answer's outcome, at most 4
in flight, and runs on the simulator."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batchvoid.config import load
from batchvoid.errors import ConfigError
from batchvoid.jobfile import read
from batchvoid.models import Item, Outcome, OutcomeKind, Response, RowError
from batchvoid.providers import REGISTRY
from batchvoid.simulator import CREDENTIALS, Faults, Simulator, SimulatorSettings, provider_url
from batchvoid.transport import REDACTED, send
from tests.conftest import run_on, sim_config, write

pytestmark = pytest.mark.anyio

KEY = "bv1-0123456789abcdef0123456789abcdef0123456789abcdef"
SECRET = "mx_8d3f2b71c0e4"
BASIC = "Basic " + base64.b64encode(f"{SECRET}:x".encode()).decode()
BASE = "https://acme.chargify.com"


def adapter(void_reason: str | None = "Bulk cleanup") -> Any:
    options = {} if void_reason is None else {"void_reason": void_reason}
    return REGISTRY["maxio"].build(BASE, {"api_key": SECRET}, options)


def item(reason: str | None = None, invoice_id: str = "inv_8htcd29wcq3q6") -> Item:
    return Item(4, "maxio", invoice_id, metadata={} if reason is None else {"void_reason": reason})


def answer(status: int, body: Any) -> Response:
    return Response(status, {}, json.dumps(body).encode())


def test_the_void_is_a_json_post_with_the_reason_and_basic_with_the_password_x() -> None:
    """POST {site}/invoices/{uid}/void.json, {"void": {"reason": ...}}: the row's reason, else the
    profile's; Basic with the key and the literal password x; no idempotency header."""
    request = adapter().void_request(item(' Duplicate: "ACME" ', "inv/../x"), KEY)
    assert (request.method, request.url) == ("POST", f"{BASE}/invoices/inv%2F..%2Fx/void.json")
    assert request.headers == {
        "Authorization": BASIC,
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    assert json.loads(request.body or b"") == {"void": {"reason": 'Duplicate: "ACME"'}}
    assert set(request.secrets) == {BASIC, SECRET}
    assert request.public == ("x",)  # a documented constant: scrubbing it would redact every "x"
    default = adapter().void_request(item(), KEY)
    assert json.loads(default.body or b"") == {"void": {"reason": "Bulk cleanup"}}
    assert adapter().void_request(item(), KEY) == default  # the same request on every attempt
    with pytest.raises(ValueError, match="no void_reason"):
        adapter(void_reason=None).void_request(item(), KEY)


def test_the_read_is_a_get_of_the_invoice() -> None:
    lookup = adapter().lookup_request(item())
    assert (lookup.method, lookup.url, lookup.body) == (
        "GET",
        f"{BASE}/invoices/inv_8htcd29wcq3q6.json",
        None,
    )
    assert "Content-Type" not in lookup.headers
    assert adapter().read_request(item()) is None  # nothing is read before the void


NOT_VOIDABLE = {
    "errors": ["Invoice status must be 'open', 'canceled', or 'pending' and non-consolidated to be voided."]
}


@pytest.mark.parametrize(
    ("response", "kind", "check"),
    [
        (answer(200, {"uid": "inv_1", "status": "voided"}), OutcomeKind.VOIDED, False),
        (answer(200, {"invoice": {"uid": "inv_1", "status": "voided"}}), OutcomeKind.VOIDED, False),
        (answer(200, {"uid": "inv_1", "status": "open"}), OutcomeKind.REJECTED, False),
        (answer(422, NOT_VOIDABLE), OutcomeKind.REJECTED, True),
        (answer(404, None), OutcomeKind.REJECTED, False),
        (answer(401, {"errors": ["HTTP Basic: Access denied."]}), OutcomeKind.AUTH_FAILED, False),
        (
            answer(429, {"errors": ["Your request was denied due to a usage violation."]}),
            OutcomeKind.THROTTLED,
            False,
        ),
        (
            Response(429, {}, b"Your request was denied due to a usage violation."),
            OutcomeKind.THROTTLED,
            False,
        ),
        (answer(500, {"errors": ["boom"]}), OutcomeKind.RETRYABLE, False),
    ],
)
def test_each_documented_answer_has_its_outcome(response: Response, kind: OutcomeKind, check: bool) -> None:
    outcome = adapter().parse_void(item(), response)
    assert (outcome.kind, outcome.check_status) == (kind, check)


def test_a_422_is_settled_by_the_invoice_status_and_a_404_says_what_to_check() -> None:
    rejected = adapter().parse_void(item(), answer(422, NOT_VOIDABLE))
    assert rejected.reason == f"HTTP 422: {NOT_VOIDABLE['errors'][0]}"
    void = adapter().parse_lookup(item(), answer(200, {"uid": "inv_1", "status": "voided"}), rejected)
    assert void.kind is OutcomeKind.ALREADY_VOID
    paid = adapter().parse_lookup(item(), answer(200, {"status": "paid"}), rejected)
    assert paid == Outcome(OutcomeKind.REJECTED, f"{rejected.reason} (invoice status: paid)", 422)
    assert adapter().parse_lookup(item(), answer(502, {}), rejected).kind is OutcomeKind.RETRYABLE
    missing = adapter().parse_void(item(), answer(404, None))
    assert missing.reason == (
        "HTTP 404: no invoice with this uid at this site: check the uid and the profile's base_url"
    )


def test_the_reason_is_required_from_the_row_or_the_profile_before_anything_is_sent(tmp_path: Path) -> None:
    """A profile without void_reason makes each row without one a bad row naming the fix; base_url is required."""
    config = write(
        tmp_path / "c.toml", '[providers.mx]\ntype = "maxio"\nbase_url = "https://acme.chargify.com"\n'
    )
    jobs = write(tmp_path / "j.csv", "provider,invoice_id,void_reason\nmx,inv_1,\nmx,inv_2,duplicate\n")
    got = list(read(jobs, load(config).profiles))
    assert got[0] == RowError(2, "no void_reason: give one in this row or set void_reason in [providers.mx]")
    assert isinstance(got[1], Item)
    assert got[1].metadata["void_reason"] == "duplicate"
    lines = write(tmp_path / "j.jsonl", '{"provider": "mx", "invoice_id": "inv_1"}\n')
    assert list(read(lines, load(config).profiles)) == [
        RowError(1, "no void_reason: give one in this row or set void_reason in [providers.mx]")
    ]
    write(config, '[providers.mx]\ntype = "maxio"\n')
    with pytest.raises(ConfigError, match=r"base_url is required for Maxio \(each account has its own\)"):
        load(config)


def test_concurrency_is_held_to_four_in_flight(tmp_path: Path) -> None:
    """A profile's own concurrency above 4 is refused, naming the fix; [defaults]' higher one is lowered."""
    config = tmp_path / "c.toml"
    profile = '[providers.mx]\ntype = "maxio"\nbase_url = "https://acme.chargify.com"\nvoid_reason = "x"\n'
    write(config, profile + "concurrency = 8\n")
    with pytest.raises(
        ConfigError, match=r"concurrency = 8, but Maxio takes at most 4 .* set concurrency to 4 or less"
    ):
        load(config)
    write(config, "[defaults]\nconcurrency = 8\n" + profile + '[providers.rapyd]\ntype = "rapyd"\n')
    loaded = load(config)
    assert loaded.profiles["mx"].settings.concurrency == 4
    assert loaded.profiles["rapyd"].settings.concurrency == 8
    write(config, profile + "concurrency = 3\n")
    assert load(config).profiles["mx"].settings.concurrency == 3


def states(counts: Any) -> dict[str, int]:
    return {state.value: n for (_, state), n in counts.items()}


async def test_a_run_on_the_simulator_confirms_already_void_by_reading(tmp_path: Path) -> None:
    """Open voided with the row's or the profile's reason, void confirmed by the read, paid and
    draft failed naming their status, missing failed; never more than 4 requests in flight."""
    simulator = Simulator(SimulatorSettings(faults={"maxio": Faults(latency_ms=20)}))
    rows = ["inv_1,", "inv_2,duplicate", "void_3,", "paid_4,", "draft_5,", "missing_6,"] + [
        f"inv_{n}," for n in range(10, 22)
    ]
    path = write(
        tmp_path / "job.csv", "provider,invoice_id,void_reason\n" + "".join(f"maxio,{r}\n" for r in rows)
    )
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, concurrency=4), path, tmp_path)
        stats = simulator.stats()["maxio"]
        peak = simulator.peak_in_flight["maxio"]
    assert states(report.counts) == {"voided": 14, "already_void": 1, "failed": 3}
    assert stats["lookups"] == 3  # void_3, paid_4 and draft_5 answered the one 422: each read once
    assert report.requests == 18 + 3
    assert 1 < peak <= 4
    log = (tmp_path / "job.csv.log").read_text()
    assert "(invoice status: paid)" in log
    assert "(invoice status: draft)" in log


async def test_the_simulator_refuses_a_void_without_a_reason_or_with_another_password() -> None:
    """Its own answers: a body without void.reason is a 422 and voids nothing; the password must be x."""
    simulator = Simulator()
    key = CREDENTIALS["maxio"]["api_key"]
    async with simulator.serve() as url, aiohttp.ClientSession() as session:
        base = provider_url(url, "maxio")
        for body, password in (
            (b'{"void": {"reason": ""}}', "x"),
            (b"{}", "x"),
            (b'{"void": {"reason": "r"}}', ""),
        ):
            headers = {
                "Authorization": "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode(),
                "Content-Type": "application/json",
            }
            async with session.post(f"{base}/invoices/inv_1/void.json", data=body, headers=headers) as reply:
                assert reply.status == (401 if password != "x" else 422)
        assert simulator.invoice_state("maxio", "inv_1") == "open"


async def test_an_answer_keeps_its_letter_x_but_loses_the_echoed_key() -> None:
    """The password x is public: an answer's "tax_amount" stays whole; the key echoed in a 401 is scrubbed."""
    simulator = Simulator(SimulatorSettings.from_specs(["maxio:echo_credentials=true"]))
    async with simulator.serve() as url, aiohttp.ClientSession() as session:
        maxio = REGISTRY["maxio"].build(
            provider_url(url, "maxio"), CREDENTIALS["maxio"], {"void_reason": "r"}
        )
        voided = await send(session, maxio.void_request(item(), KEY), 5)
        simulator.revoke("maxio")
        refused = await send(session, maxio.void_request(item(invoice_id="inv_2"), KEY), 5)
    assert voided.status == 200
    assert b'"tax_amount"' in voided.body
    assert maxio.parse_void(item(), voided).kind is OutcomeKind.VOIDED
    assert refused.status == 401
    assert REDACTED.encode() in refused.body
    assert CREDENTIALS["maxio"]["api_key"].encode() not in refused.body
