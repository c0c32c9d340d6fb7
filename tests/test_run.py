"""End to end: the real engine voids real requests against the simulator on loopback."""

from __future__ import annotations

import base64
import gc
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from batchvoid.errors import JobFileError, LedgerError
from batchvoid.heap import YOUNG_COLLECTION_AT
from batchvoid.keys import idempotency_key
from batchvoid.models import ItemState
from batchvoid.pace import Pace
from batchvoid.run import EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from batchvoid.simulator import CREDENTIALS, Simulator, SimulatorSettings
from tests.conftest import job, run_on, run_until, sim_config, write

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parent.parent
PROVIDERS = ("chargeover", "rapyd", "campfire", "maple", "sellapp")


def states(report_counts: object) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (_, state), n in report_counts.items():  # type: ignore[attr-defined]
        totals[state.value] = totals.get(state.value, 0) + n
    return totals


async def test_example_job_voids_what_is_voidable_and_resends_nothing(
    sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    """jobs/example.csv: open invoices voided, already-void ones done, paid/missing failed; a rerun sends nothing."""
    simulator, url = sim
    job_file = shutil.copy(REPO / "jobs" / "example.csv", tmp_path / "example.csv")
    report = await run_on(sim_config(url), Path(job_file), tmp_path)
    assert states(report.counts) == {"voided": 10, "already_void": 3, "failed": 4}
    assert report.exit_status == EXIT_FAILED
    for (provider, invoice), n in simulator.voids_applied.items():
        assert n == 1, (provider, invoice)
    assert sum(simulator.voids_applied.values()) == 10
    sent = sum(simulator.void_requests.values())

    again = await run_on(sim_config(url), Path(job_file), tmp_path)
    assert again.requests == 0
    assert sum(simulator.void_requests.values()) == sent
    assert again.counts == report.counts


async def test_failed_items_carry_the_providers_reason(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """A paid or missing invoice ends failed with the HTTP status and the provider's own message."""
    _, url = sim
    path = job(tmp_path, [("chargeover", "paid_1"), ("sellapp", "missing_2"), ("maple", "paid_3")])
    await run_on(sim_config(url), path, tmp_path)
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    rows = dict(db.execute("SELECT invoice_id, state || ' ' || http_status || ' ' || reason FROM items"))
    assert rows == {
        "paid_1": "failed 400 HTTP 400: Cannot void a paid invoice.",
        "missing_2": "failed 404 HTTP 404: Invoice not found.",
        "paid_3": "failed 400 HTTP 400: invoice_not_voidable: Invoice with status PAID cannot be voided",
    }


async def test_the_summary_reads_failures_from_the_items_only_when_there_are_some(
    sim: tuple[Simulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No index serves a scan for failed items (a 1M-item job's held its summary up): a run whose
    counts hold no failure does not make it; one with failures lists them and their reasons."""
    from batchvoid.ledger import SqliteLedger

    _, url = sim
    scans: list[str] = []
    items, reasons = SqliteLedger.items, SqliteLedger.failure_reasons
    monkeypatch.setattr(
        SqliteLedger, "items", lambda self, *a, **k: scans.append("items") or items(self, *a, **k)
    )
    monkeypatch.setattr(
        SqliteLedger, "failure_reasons", lambda self, *a: scans.append("reasons") or reasons(self, *a)
    )
    clean = await run_on(sim_config(url), job(tmp_path, [("rapyd", "inv_1"), ("maple", "inv_2")]), tmp_path)
    assert (clean.exit_status, clean.failures, clean.reasons, scans) == (EXIT_OK, (), (), [])
    path = job(tmp_path, [("rapyd", "inv_3"), ("chargeover", "paid_1")], name="second.csv")
    failing = await run_on(sim_config(url), path, tmp_path)
    assert failing.exit_status == EXIT_FAILED
    assert [(provider, invoice) for provider, invoice, _ in failing.failures] == [("chargeover", "paid_1")]
    assert [(provider, n) for provider, _, n in failing.reasons] == [("chargeover", 1)]
    assert scans == ["items", "reasons"]


async def test_the_voids_go_out_with_the_start_up_heap_frozen_and_young_collections_rare(
    sim: tuple[Simulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the engine sends, the collector leaves the start-up heap alone and collects the
    young generation at YOUNG_COLLECTION_AT objects (at 700 it went over the voids in flight
    600 times per 100,000 voids); once it is done, the process's own settings are back."""
    from batchvoid.engine import Engine

    _, url = sim
    during: list[tuple[int, int]] = []
    engine_run = Engine.run

    async def run(self: Engine) -> None:
        during.append((gc.get_threshold()[0], gc.get_freeze_count()))
        await engine_run(self)

    monkeypatch.setattr(Engine, "run", run)
    before = gc.get_threshold()
    report = await run_on(sim_config(url), job(tmp_path, [("sellapp", "inv_1")]), tmp_path)
    assert report.exit_status == EXIT_OK
    assert during[0][0] == YOUNG_COLLECTION_AT
    assert during[0][1] > 10_000  # aiohttp and batchvoid alone are tens of thousands of objects
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)


async def test_jsonl_example_runs(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """jobs/example.jsonl runs too, with its store, company and void_date fields."""
    _, url = sim
    report = await run_on(sim_config(url), REPO / "jobs" / "example.jsonl", tmp_path)
    assert states(report.counts) == {"voided": 5, "already_void": 2, "failed": 1}
    assert report.exit_status == EXIT_FAILED


async def test_interrupted_run_resumes_without_loss_or_repeat(tmp_path: Path) -> None:
    """Cancelled mid-job, the next run finishes every item; finished items are never sent again."""
    simulator = Simulator(SimulatorSettings.from_specs(["latency_ms=5"]))
    rows = [(p, f"inv-{p}-{n}") for n in range(60) for p in PROVIDERS]
    path = job(tmp_path, rows)
    async with simulator.serve() as url:
        config = sim_config(url, concurrency=4)
        await run_until(config, path, tmp_path, lambda: sum(simulator.void_requests.values()) >= 100)
        db = sqlite3.connect(tmp_path / "ledger.sqlite")
        done_before = {
            (p, i) for p, i in db.execute("SELECT provider, invoice_id FROM items WHERE state = 'voided'")
        }
        in_flight = db.execute("SELECT count(*) FROM items WHERE state = 'in_flight'").fetchone()[0]
        assert 0 < len(done_before) < len(rows)
        assert in_flight <= 4 * len(PROVIDERS)
        sent_before = dict(simulator.void_requests)

        report = await run_on(config, path, tmp_path)
    assert report.exit_status == EXIT_OK
    assert sum(report.counts.values()) == len(rows)
    assert all(state.is_done for _, state in report.counts)
    for key in done_before:
        assert simulator.void_requests[key] == sent_before[key], f"{key} was sent again"
    assert all(simulator.voids_applied[(p, i)] == 1 for p, i in rows)
    assert sum(simulator.void_requests.values()) <= len(rows) + in_flight


async def test_a_crash_between_sending_and_recording_counts_as_done(
    sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    """Items voided at the provider but left in flight in the ledger are resent with the same key and count as done."""
    simulator, url = sim
    rows = [(p, f"x{n}") for n in range(3) for p in PROVIDERS]
    path = job(tmp_path, rows)
    await run_on(sim_config(url), path, tmp_path)
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("UPDATE items SET state = 'in_flight'")  # as if killed after sending, before recording
    db.commit()
    replays = simulator.stats()["totals"]["idempotent_replays"]

    report = await run_on(sim_config(url), path, tmp_path)
    assert report.exit_status == EXIT_OK
    got = {(p, s): n for (p, s), n in report.counts.items()}
    # Rapyd and Maple replay the first answer for the same key; the others answer "already void".
    assert got == {
        ("rapyd", ItemState.VOIDED): 3,
        ("maple", ItemState.VOIDED): 3,
        ("chargeover", ItemState.ALREADY_VOID): 3,
        ("campfire", ItemState.ALREADY_VOID): 3,
        ("sellapp", ItemState.ALREADY_VOID): 3,
    }
    assert simulator.stats()["totals"]["idempotent_replays"] == replays + 6
    assert all(n == 1 for n in simulator.voids_applied.values())


async def test_changed_job_file_is_refused(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """Resuming a job whose file changed is refused, saying what to do, and sends nothing."""
    simulator, url = sim
    path = job(tmp_path, [("rapyd", "a"), ("maple", "b")])
    await run_on(sim_config(url), path, tmp_path)
    sent = sum(simulator.void_requests.values())
    job(tmp_path, [("rapyd", "a"), ("maple", "b"), ("maple", "c")])
    with pytest.raises(LedgerError, match=r"has changed since job 'job.csv' began .* pass --job-id"):
        await run_on(sim_config(url), path, tmp_path)
    assert sum(simulator.void_requests.values()) == sent
    other = await run_on(sim_config(url), path, tmp_path, job_id="job-v2")
    assert sum(other.counts.values()) == 3


async def test_bad_rows_anywhere_mean_nothing_is_sent(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """A malformed row on line 80 refuses the whole file: not one request, nothing in the ledger."""
    simulator, url = sim
    lines = [f"rapyd,inv{n}" for n in range(78)] + ["rapyd,"] + [f"maple,m{n}" for n in range(20)]
    path = write(tmp_path / "job.csv", "provider,invoice_id\n" + "\n".join(lines) + "\n")
    with pytest.raises(JobFileError, match=r"job.csv line 80: empty invoice_id"):
        await run_on(sim_config(url), path, tmp_path)
    assert simulator.stats()["totals"]["requests"] == 0
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    assert db.execute("SELECT count(*) FROM items").fetchone() == (0,)


async def test_duplicate_rows_are_voided_once(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """The same (provider, invoice) twice is sent once; the duplicate is reported with both lines."""
    simulator, url = sim
    path = job(tmp_path, [("sellapp", "7"), ("campfire", "7"), ("sellapp", "7")])
    report = await run_on(sim_config(url), path, tmp_path)
    assert report.ingest is not None
    assert report.ingest.duplicates == 1
    (dup,) = report.ingest.first_duplicates
    assert (dup.line, dup.first_line, dup.provider) == (4, 2, "sellapp")
    assert simulator.void_requests[("sellapp", "7")] == 1


TRANSIT_S = 0.1  # how much a loaded machine may bunch a lane's requests between its send and the provider


def most_within(times: list[float], period: float) -> int:
    """The most of `times` that any span of `period` seconds holds."""
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + period) for i, start in enumerate(times))


async def test_rate_limits_hold_in_every_window_at_the_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two windows on one lane ('10/0.25s', '25/1s') hold for its sends, and those are the requests the provider got.

    Checked at both ends, so that a loaded machine cannot fail it and a broken lane cannot pass.
    The lane's own send times hold both windows exactly: that is what its pace promises, under
    any load. The provider got exactly those requests, none before its send. At the provider
    every window holds to within how much the transit varied: with the CPU oversubscribed, a
    burst's first requests, which open connections, reached the server up to 30 ms after their
    send (in CI's second pass once, over 100 ms) and the next burst 1 ms after, more than the
    26-30 ms MARGIN and JITTER_S leave, so arrivals alone cannot be held to the exact count. Sends
    that keep N in any T arrive N in any T less the spread of their transit times: that is the
    bound checked, never looser than TRANSIT_S.
    """
    sends: list[float] = []

    class RecordingPace(Pace):
        """The engine's real pace, noting each send time it hands out."""

        async def acquire(self) -> float:
            sent = await super().acquire()
            sends.append(sent)
            return sent

    monkeypatch.setattr("batchvoid.engine.Pace", RecordingPace)
    simulator = Simulator(SimulatorSettings())
    path = job(tmp_path, [("chargeover", f"i{n}") for n in range(32)])
    async with simulator.serve() as url:
        config = sim_config(url, {"chargeover": ["10/0.25s", "25/1s"]}, concurrency=16)
        report = await run_on(config, path, tmp_path)
    assert report.exit_status == EXIT_OK
    arrivals = simulator.arrivals["chargeover"]
    assert len(sends) == len(arrivals) == 32
    assert all(arrived >= sent for sent, arrived in zip(sorted(sends), sorted(arrivals), strict=True))
    transits = [arrived - sent for sent, arrived in zip(sorted(sends), sorted(arrivals), strict=True)]
    spread = max(TRANSIT_S, max(transits) - min(transits))
    assert spread < 0.5, f"the requests' transit varied by {spread:.3f}s"
    for count, period in ((10, 0.25), (25, 1.0)):
        assert most_within(sends, period) <= count, f"{most_within(sends, period)} sends within {period}s"
        if spread < period:
            at_provider = most_within(arrivals, period - spread)
            assert at_provider <= count, f"{at_provider} arrivals within {period - spread:g}s"


async def test_a_crawling_provider_does_not_hold_up_the_others(tmp_path: Path) -> None:
    """With ChargeOver at 2/s, the other four providers' 400 items finish while it has done only a few."""
    simulator = Simulator(SimulatorSettings())
    rows = [("chargeover", f"c{n}") for n in range(50)] + [
        (p, f"x{n}") for n in range(100) for p in PROVIDERS[1:]
    ]
    path = job(tmp_path, rows)
    async with simulator.serve() as url:
        config = sim_config(url, {"chargeover": ["2/1s"]})

        def others_done() -> bool:
            return sum(n for (p, _), n in simulator.voids_applied.items() if p != "chargeover") >= 400

        await run_until(config, path, tmp_path, others_done, poll_s=0.01)
    crawled = sum(n for (p, _), n in simulator.voids_applied.items() if p == "chargeover")
    assert crawled <= 5


async def test_retryable_answers_are_retried_with_the_same_key(tmp_path: Path) -> None:
    """5xx answers are retried; every attempt of an item carries the one key derived from job, provider, invoice."""
    simulator = Simulator(SimulatorSettings.from_specs(["error_rate=0.4"], seed=7))
    rows = [(p, f"r{n}") for n in range(10) for p in PROVIDERS]
    path = job(tmp_path, rows)
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, max_attempts=20), path, tmp_path)
    assert report.exit_status == EXIT_OK
    assert report.requests > len(rows)
    events = [json.loads(line) for line in (tmp_path / "job.csv.log").read_text().splitlines()]
    # One line per request: an attempt line for each that did not finish its item, then the outcome.
    attempts = [e for e in events if e["event"] == "void.attempt"]
    outcomes = [e for e in events if e["event"] == "void.succeeded"]
    assert len(outcomes) == len(rows)
    assert len(attempts) + len(outcomes) == report.requests
    assert {e["outcome"] for e in attempts} == {"retryable"}
    for e in attempts + outcomes:
        assert e["idempotency_key"] == idempotency_key("job.csv", e["provider"], e["invoice_id"])
    assert sum(e["attempts"] for e in outcomes) == report.requests
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    assert db.execute("SELECT sum(attempts) FROM items").fetchone() == (report.requests,)
    # The attempt history holds the requests that did not finish their item; the item row the last.
    assert db.execute("SELECT count(*) FROM attempts").fetchone() == (len(attempts),)


async def test_revoked_key_stops_only_that_provider(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """A 401 stops its provider's lane, leaves its items pending, names the variables; others finish."""
    simulator, url = sim
    simulator.revoke("sellapp")
    rows = [(p, f"k{n}") for n in range(5) for p in PROVIDERS]
    path = job(tmp_path, rows)
    report = await run_on(sim_config(url), path, tmp_path)
    assert report.exit_status == EXIT_STOPPED
    (reason,) = report.stopped
    assert reason.startswith("sellapp: the provider refused the credentials (HTTP 401")
    assert "Check SELLAPP_API_KEY" in reason
    assert report.counts[("sellapp", ItemState.PENDING)] == 5
    assert simulator.stats()["sellapp"]["requests"] <= 4  # at most the lane's in-flight ones

    simulator.restore("sellapp")
    again = await run_on(sim_config(url), path, tmp_path)
    assert again.exit_status == EXIT_OK


async def test_a_sellapp_403_fails_that_invoice_and_the_lane_goes_on(
    sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    """SellApp's 403 (the key works, not for that store) fails only its item; the rest of the lane is voided."""
    _, url = sim
    path = write(
        tmp_path / "job.csv",
        "provider,invoice_id,store\nsellapp,1,\nsellapp,2,Not_Ours\nsellapp,3,\nsellapp,4,shop-b\n",
    )
    report = await run_on(sim_config(url), path, tmp_path)
    assert report.stopped == ()
    assert report.exit_status == EXIT_FAILED
    assert report.counts[("sellapp", ItemState.VOIDED)] == 3
    ((provider, invoice, reason),) = report.failures
    assert (provider, invoice) == ("sellapp", "2")
    assert reason.startswith("HTTP 403: You do not have access to this store.; the key may not act on")
    assert "the store 'Not_Ours' (X-STORE)" in reason


async def test_no_secret_reaches_any_log_line(tmp_path: Path) -> None:
    """Neither the log file nor the console ever holds a credential, a Basic token or a signature."""
    simulator = Simulator(SimulatorSettings.from_specs(["error_rate=0.2"], seed=3))
    rows = [(p, f"s{n}") for n in range(5) for p in PROVIDERS] + [("rapyd", "void_1"), ("maple", "paid_1")]
    path = job(tmp_path, rows)
    console = io.StringIO()
    async with simulator.serve() as url:
        simulator.revoke("campfire")
        await run_on(sim_config(url), path, tmp_path, out=console)
    text = (tmp_path / "job.csv.log").read_text() + console.getvalue()
    assert "void.succeeded" in text
    assert "void.attempt" in text
    secrets = [v for roles in CREDENTIALS.values() for v in roles.values()]
    co = CREDENTIALS["chargeover"]
    secrets.append(base64.b64encode(f"{co['username']}:{co['password']}".encode()).decode())
    for secret in secrets:
        assert secret not in text
    for word in ("signature", "Authorization", "Bearer", "Basic ", "Token "):
        assert word not in text
