"""Recurly: the exact requests, every documented answer's outcome, the read that picks void or
mark_failed, and runs on the simulator."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from batchvoid.cli import main
from batchvoid.config import load
from batchvoid.jobfile import read
from batchvoid.models import Item, Outcome, OutcomeKind, Response, RowError
from batchvoid.providers import REGISTRY
from batchvoid.providers.recurly import ACCEPT, Recurly
from batchvoid.simulator import Faults, Simulator, SimulatorSettings
from tests.conftest import job, run_on, sim_config, write

pytestmark = pytest.mark.anyio

KEY = "bv1-0123456789abcdef0123456789abcdef0123456789abcdef"
SECRET = "a8b1e9f0c3d24e5f"
BASIC = "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode()
REPO = Path(__file__).resolve().parent.parent


def adapter(now: float = 1_000.0) -> Recurly:
    built = REGISTRY["recurly"].build("https://v3.recurly.com", {"api_key": SECRET}, {})
    assert isinstance(built, Recurly)
    return replace(built, clock=lambda: now)


def item(invoice_type: str | None = None, invoice_id: str = "e28zov4fw0v2") -> Item:
    return Item(
        3, "recurly", invoice_id, metadata={} if invoice_type is None else {"invoice_type": invoice_type}
    )


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, json.dumps(body).encode())


def error(status: int, error_type: str, message: str = "msg") -> Response:
    return answer(status, {"error": {"type": error_type, "message": message}})


def invoice(kind: str, state: str) -> Response:
    return answer(200, {"id": "e28zov4fw0v2", "object": "invoice", "type": kind, "state": state})


def test_a_credit_invoice_is_voided_and_a_charge_invoice_marked_failed_with_the_versioned_accept() -> None:
    """PUT .../void for credit, PUT .../mark_failed for charge; Basic with the key and an empty
    password, the required Accept version, no body, no idempotency header; no read needed."""
    for kind, path in (("credit", "void"), ("charge", "mark_failed"), (" Charge ", "mark_failed")):
        request = adapter().void_request(item(kind, "e28/../x"), KEY)
        assert (request.method, request.url, request.body) == (
            "PUT",
            f"https://v3.recurly.com/invoices/e28%2F..%2Fx/{path}",
            None,
        )
        assert request.headers == {"Authorization": BASIC, "Accept": "application/vnd.recurly.v2021-02-25"}
        assert set(request.secrets) == {BASIC, SECRET}
        assert KEY not in request.headers.values()
        assert adapter().read_request(item(kind)) is None


def test_without_a_type_the_invoice_is_read_first_and_its_type_chooses_the_call() -> None:
    """The read is GET /invoices/{id}; its type picks the call, its state may settle the item."""
    read = adapter().read_request(item())
    assert read is not None
    assert (read.method, read.url, read.body) == ("GET", "https://v3.recurly.com/invoices/e28zov4fw0v2", None)
    assert read.headers["Accept"] == ACCEPT
    for kind, chosen, path in (
        ("credit", "credit", "/void"),
        ("charge", "charge", "/mark_failed"),
        ("legacy", "charge", "/mark_failed"),
    ):
        told = adapter().parse_read(item(), invoice(kind, "past_due"))
        assert isinstance(told, Item)
        assert told.metadata["invoice_type"] == chosen
        assert adapter().read_request(told) is None
        assert adapter().void_request(told, KEY).url.endswith(path)
    for state in ("voided", "failed"):
        done = adapter().parse_read(item(), invoice("charge", state))
        assert done == Outcome(OutcomeKind.ALREADY_VOID, f"invoice state: {state}", 200, "e28zov4fw0v2")
    strange = adapter().parse_read(item(), answer(200, {"state": "open"}))
    assert isinstance(strange, Outcome)
    assert strange.kind is OutcomeKind.REJECTED
    assert "give invoice_type (credit or charge) in the row" in strange.reason


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (error(404, "not_found", "Couldn't find Invoice"), OutcomeKind.REJECTED),
        (error(401, "unauthorized"), OutcomeKind.AUTH_FAILED),
        (error(429, "rate_limited"), OutcomeKind.THROTTLED),
        (error(429, "simultaneous_request"), OutcomeKind.RETRYABLE),
        (error(503, "service_not_available"), OutcomeKind.RETRYABLE),
    ],
)
def test_a_read_that_fails_has_the_outcome_of_its_answer(response: Response, kind: OutcomeKind) -> None:
    outcome = adapter().parse_read(item(), response)
    assert isinstance(outcome, Outcome)
    assert outcome.kind is kind


@pytest.mark.parametrize(
    ("response", "kind", "check"),
    [
        (invoice("credit", "voided"), OutcomeKind.VOIDED, False),
        (invoice("charge", "failed"), OutcomeKind.VOIDED, False),
        (invoice("charge", "past_due"), OutcomeKind.REJECTED, False),
        (
            error(422, "validation", "Invoice did not meet the conditions to be voided."),
            OutcomeKind.REJECTED,
            True,
        ),
        (error(404, "not_found"), OutcomeKind.REJECTED, False),
        (error(406, "invalid_api_version"), OutcomeKind.REJECTED, False),
        (error(401, "unauthorized"), OutcomeKind.AUTH_FAILED, False),
        (error(403, "invalid_permissions"), OutcomeKind.AUTH_FAILED, False),
        (error(429, "rate_limited"), OutcomeKind.THROTTLED, False),
        (error(422, "simultaneous_request"), OutcomeKind.RETRYABLE, False),
        (error(500, "internal_server_error"), OutcomeKind.RETRYABLE, False),
    ],
)
def test_each_documented_answer_has_its_outcome(response: Response, kind: OutcomeKind, check: bool) -> None:
    outcome = adapter().parse_void(item("charge"), response)
    assert (outcome.kind, outcome.check_status) == (kind, check)


def test_a_charge_marked_failed_says_so_and_a_429_waits_until_the_documented_reset() -> None:
    """Recurly documents X-RateLimit-Reset (Unix seconds), not Retry-After."""
    assert adapter().parse_void(item("charge"), invoice("charge", "failed")).reason == "marked failed"
    throttled = error(429, "rate_limited")
    reset = replace(throttled, headers={"X-RateLimit-Reset": "1030"})
    assert adapter(now=1_000.0).parse_void(item("charge"), reset).retry_after == 30.0
    assert adapter().parse_void(item("charge"), throttled).retry_after is None
    both = replace(throttled, headers={"X-RateLimit-Reset": "1030", "Retry-After": "5"})
    assert adapter(now=1_000.0).parse_void(item("charge"), both).retry_after == 5.0
    old = adapter().parse_void(item("charge"), error(406, "invalid_api_version", "That accept header"))
    assert "upgrade batchvoid" in old.reason


def test_a_422_is_settled_by_the_invoice_state_naming_a_wrong_row_type() -> None:
    """voided or failed: already void; anything else fails with Recurly's words and the state,
    and says so when the row named the other type."""
    rejected = adapter().parse_void(
        item("charge"), error(422, "validation", "Tried marking a closed invoice")
    )
    assert rejected.reason == "HTTP 422: validation: Tried marking a closed invoice"
    for state in ("failed", "voided"):
        assert adapter().parse_lookup(item("charge"), invoice("charge", state), rejected).kind is (
            OutcomeKind.ALREADY_VOID
        )
    paid = adapter().parse_lookup(item("charge"), invoice("charge", "paid"), rejected)
    assert paid.kind is OutcomeKind.REJECTED
    assert paid.reason == "HTTP 422: validation: Tried marking a closed invoice (invoice status: paid)"
    wrong = adapter().parse_lookup(item("charge"), invoice("credit", "open"), rejected)
    assert wrong.kind is OutcomeKind.REJECTED
    assert wrong.reason.endswith(
        "(invoice status: open); it is a credit invoice but the row's invoice_type says charge: "
        "fix the row, or leave invoice_type empty to have it read"
    )
    assert adapter().parse_lookup(item("charge"), error(503, "x"), rejected).kind is OutcomeKind.RETRYABLE


def states(counts: Any) -> dict[str, int]:
    return {state.value: n for (_, state), n in counts.items()}


async def test_a_run_on_the_simulator_picks_each_call_and_confirms_already_void(tmp_path: Path) -> None:
    """Typed rows go straight to their call; untyped ones are read first (counted as requests);
    void and failed invoices are confirmed by the read; paid, wrong-typed and missing fail."""
    simulator = Simulator()
    rows = [
        ("recurly", "charge", "e1"),  # marked failed
        ("recurly", "credit", "credit_e2"),  # voided
        ("recurly", "", "e3"),  # read: charge, marked failed
        ("recurly", "", "credit_e4"),  # read: credit, voided
        ("recurly", "", "void_e5"),  # read: failed already, nothing sent
        ("recurly", "charge", "void_e6"),  # 422, read: failed: already void
        ("recurly", "charge", "paid_e7"),  # 422, read: paid
        ("recurly", "charge", "credit_e8"),  # the wrong call: 422, read: an open credit invoice
        ("recurly", "", "missing_e9"),  # read: 404
    ]
    path = write(
        tmp_path / "job.csv",
        "provider,invoice_type,invoice_id\n" + "".join(f"{p},{t},{i}\n" for p, t, i in rows),
    )
    async with simulator.serve() as url:
        report = await run_on(sim_config(url), path, tmp_path)
        stats = simulator.stats()["recurly"]
        credit_e8 = simulator.invoice_state("recurly", "credit_e8")
    assert states(report.counts) == {"voided": 4, "already_void": 2, "failed": 3}
    assert (
        stats["lookups"] == 4 + 3
    )  # e3, credit_e4, void_e5, missing_e9 read first; void_e6, paid_e7, credit_e8 after a 422
    assert stats["voided"] == 4
    assert report.requests == 9 - 2 + 7  # no call for void_e5 and missing_e9; every read counts
    assert credit_e8 == "open"  # the wrong call changed nothing
    log = (tmp_path / "job.csv.log").read_text()
    assert "(invoice status: paid)" in log
    assert "it is a credit invoice but the row's invoice_type says charge" in log
    assert "reading its invoice type: HTTP 404: not_found" in log


async def test_the_read_before_the_void_is_held_to_the_limits_and_retried(tmp_path: Path) -> None:
    """A throttled or failed read is sent again like a void; the read and the void each take a
    slot of the profile's limit, so 6 untyped invoices at 4 per 0.1 s take over 0.2 s."""
    settings = SimulatorSettings(faults={"recurly": Faults(error_rate=0.3)}, seed=7)
    simulator = Simulator(settings)
    rows = [("recurly", f"e{n}") for n in range(6)]
    async with simulator.serve() as url:
        config = sim_config(url, {"recurly": ["4/0.1s"]}, max_attempts=20)
        report = await run_on(config, job(tmp_path, rows), tmp_path)
        stats = simulator.stats()["recurly"]
        arrivals = simulator.arrivals["recurly"]
    assert states(report.counts) == {"voided": 6}
    assert stats["faults"]["error"] > 0
    assert stats["lookups"] >= 6
    assert report.requests == len(arrivals) == stats["requests"]
    spread = max(arrivals) - min(arrivals)
    assert spread >= 0.1 * (len(arrivals) // 4 - 1)


async def test_lost_answers_are_sent_again_and_their_422s_settled_by_the_read(tmp_path: Path) -> None:
    """Recurly has no idempotency key: a call whose answer was lost after it marked the invoice
    failed is sent again, answered 422, and the read finds it failed: already void, marked once."""
    settings = SimulatorSettings(faults={"recurly": Faults(reset_rate=0.5)}, seed=3)
    simulator = Simulator(settings)
    rows = "".join(f"recurly,e{n},charge\n" for n in range(12))
    path = write(tmp_path / "job.csv", "provider,invoice_id,invoice_type\n" + rows)
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, max_attempts=30), path, tmp_path)
        applied = dict(simulator.voids_applied)
    counts = states(report.counts)
    assert counts["voided"] + counts["already_void"] == 12
    assert counts["already_void"] > 0  # a lost answer happened and was confirmed by the read
    assert applied == {("recurly", f"e{n}"): 1 for n in range(12)}


def test_the_example_job_rehearses_every_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`batchvoid run jobs/example-recurly-maxio.csv --simulate`: each call, a read, already void, a failure."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", str(REPO / "jobs" / "example-recurly-maxio.csv"), "--simulate"])
    assert result.exit_code == 1, result.output  # the paid invoices fail
    lines = {line.split()[1]: line.split()[2:] for line in result.stdout.splitlines() if line.startswith("│")}
    assert lines["recurly"] == ["│", "3", "│", "1", "│", "1", "│", "5", "│"]
    assert lines["maxio"] == ["│", "2", "│", "1", "│", "1", "│", "4", "│"]
    assert "recurly paid_e28zov4fw0v8: HTTP 422: validation:" in result.stdout
    assert "13 requests" in result.stdout


def test_a_row_s_invoice_type_is_checked_when_the_job_is_read(tmp_path: Path) -> None:
    """charge or credit (any case), or empty; anything else is a bad row, in CSV and JSONL alike."""
    config = load(write(tmp_path / "c.toml", '[providers.r]\ntype = "recurly"\n'))
    rows = "provider,invoice_id,invoice_type\nr,e1,Credit\nr,e2,\nr,e3,refund\n"
    got = list(read(write(tmp_path / "j.csv", rows), config.profiles))
    assert [g.metadata.get("invoice_type") if isinstance(g, Item) else g for g in got] == [
        "Credit",
        "",
        RowError(4, "invoice_type 'refund' must be charge or credit, or empty"),
    ]
    lines = '{"provider": "r", "invoice_id": "e1", "invoice_type": "void"}\n'
    assert list(read(write(tmp_path / "j.jsonl", lines), config.profiles)) == [
        RowError(1, "invoice_type 'void' must be charge or credit, or empty")
    ]


async def test_the_simulator_answers_on_its_own_terms() -> None:
    """Without the version Accept it answers 406; the wrong call for the type is a 422 that changes
    nothing; its read gives type and state in Recurly's words."""
    simulator = Simulator()
    auth = {"Authorization": "Basic " + base64.b64encode(b"sim_recurly_private_key:").decode()}
    async with simulator.serve() as url, aiohttp.ClientSession(base_url=url) as session:
        async with session.put("/recurly/invoices/e1/mark_failed", headers=auth) as reply:
            assert reply.status == 406
            assert (await reply.json())["error"]["type"] == "invalid_api_version"
        versioned = {**auth, "Accept": f"{ACCEPT}+json"}
        async with session.put("/recurly/invoices/e1/void", headers=versioned) as reply:
            assert reply.status == 422
        async with session.put("/recurly/invoices/credit_e2/mark_failed", headers=versioned) as reply:
            assert reply.status == 422
        async with session.get("/recurly/invoices/credit_e2", headers=versioned) as reply:
            assert reply.headers["Recurly-Version"] == "recurly.v2021-02-25"
            body = await reply.json()
        assert (body["type"], body["state"]) == ("credit", "open")
        assert simulator.invoice_state("recurly", "e1") == "open"
        assert simulator.voids_applied == {}
