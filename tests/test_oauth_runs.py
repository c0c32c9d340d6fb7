"""Xero and QuickBooks jobs run end to end on the simulator: its short-lived tokens refreshed
mid-run, the rotated refresh token kept in its file, a refused refresh, a rehearsal, kill -9."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid.cli import main
from batchvoid.engine import TOKEN_RETRIES
from batchvoid.providers import REGISTRY
from batchvoid.simulator import ACCOUNTS, CREDENTIALS, Faults, SimulatorSettings, provider_url
from batchvoid.simulator.credentials import REFRESH_TOKENS
from tests.conftest import BATCHVOID, job
from tests.served import served, set_credentials

OAUTH = ("xero", "quickbooks")
LIFETIME_S = 0.3  # the simulator's access tokens: a run of a second or so outlives several
# Open invoices, and for each provider every state that ends otherwise (Xero has drafts).
KINDS = ["", "", "", "", "", "", "", "", "void_", "paid_", "missing_"]


def rows(per_provider: int) -> list[tuple[str, str]]:
    return [
        (p, f"{kind}{p[:2]}{n}")
        for n in range(per_provider)
        for p in OAUTH
        for kind in [KINDS[n % len(KINDS)]]
    ] + [("xero", "draft-1")]


def config(tmp_path: Path, url: str, *, refresh: str = "", concurrency: int = 4) -> Path:
    """Both providers at `url`, unlimited, each with its refresh token file (started at the
    simulator's first refresh token unless it exists) and the simulator's token endpoint."""
    tables = [f"[defaults]\nconcurrency = {concurrency}\nmax_attempts = 6\ntimeout_s = 5\n"]
    for kind in OAUTH:
        tokens = tmp_path / f"{kind}.refresh-token"
        if not tokens.exists():
            tokens.write_text((refresh or REFRESH_TOKENS[kind]) + "\n")
            tokens.chmod(0o600)
        oauth = REGISTRY[kind].oauth
        assert oauth is not None
        token_url = provider_url(url, kind) + re.sub(r"^https://[^/]+", "", oauth.token_url)
        account = "".join(f'{key} = "{value}"\n' for key, value in ACCOUNTS[kind].items())
        tables.append(
            f'\n[providers.{kind}]\ntype = "{kind}"\nbase_url = "{provider_url(url, kind)}"\n'
            f'rate_limits = []\nrefresh_token_file = "{tokens}"\ntoken_url = "{token_url}"\n{account}'
        )
    path = tmp_path / "batchvoid.toml"
    path.write_text("".join(tables))
    return path


def states(ledger: Path) -> dict[str, str]:
    db = sqlite3.connect(ledger)
    try:
        return dict(db.execute("SELECT provider || ':' || invoice_id, state FROM items").fetchall())
    finally:
        db.close()


def expected_state(key: str) -> set[str]:
    invoice = key.split(":", 1)[1]
    if invoice.startswith(("paid_", "missing_", "draft")):
        return {"failed"}
    if invoice.startswith("void_"):
        return {"already_void"}
    return {"voided", "already_void"}  # already void: found void when resent after a kill


def faults(**extra: float) -> dict[str, Faults]:
    return {
        kind: Faults(token_lifetime_s=LIFETIME_S, latency_ms=25, jitter_ms=4, **extra)  # type: ignore[arg-type]
        for kind in OAUTH
    }


def test_a_run_longer_than_several_token_lifetimes_refreshes_and_keeps_the_rotated_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens expire every 0.6 s of a longer run: each is refreshed before it expires, every
    rotated refresh token is saved, the file ends at the simulator's current one, nothing is voided twice."""
    monkeypatch.chdir(tmp_path)
    set_credentials(monkeypatch)
    work = rows(60)
    path = job(tmp_path, work)
    # 0.6 s tokens, refreshed 0.15 s early: three times the answers' 45 ms, on a busy machine too.
    slower = {
        kind: Faults(token_lifetime_s=0.6, latency_ms=40, jitter_ms=5, stale_rate=0.1) for kind in OAUTH
    }
    with served(SimulatorSettings(faults=slower, seed=3)) as sim:
        cfg = config(tmp_path, sim.url, concurrency=2)
        result = CliRunner().invoke(main, ["run", str(path), "--config", str(cfg)])
        stats = sim.simulator.stats()
        applied = dict(sim.simulator.voids_applied)
        current = {kind: sim.simulator.refresh_token(kind) for kind in OAUTH}
    assert result.exit_code == 1, result.output  # the paid, missing and draft invoices fail
    got = states(tmp_path / "batchvoid.sqlite")
    assert len(got) == len(work)
    for key, state in got.items():
        assert state in expected_state(key), (key, state)
    voidable = {(p, i) for p, i in work if not i.startswith(("paid_", "missing_", "void_", "draft"))}
    assert {key for key, n in applied.items() if n} == voidable
    assert set(applied.values()) == {1}
    for kind in OAUTH:
        assert stats[kind]["tokens"] >= 3, stats[kind]  # more than two lifetimes
        # Refreshed before expiry: a 401 (a request slowed past its token's end on a loaded
        # machine) is sent again with a new token, and the run above finished all the same.
        assert (tmp_path / f"{kind}.refresh-token").read_text() == current[kind] + "\n"
    assert stats["quickbooks"]["lookups"] > len(voidable) / 2  # every QuickBooks void read first
    log = (tmp_path / "job.csv.log").read_text()
    assert "Xero voids only approved (AUTHORISED) invoices" in log  # the draft, said why
    assert "(the invoice changed since it was read)" in log  # a stale SyncToken, read again


def test_a_refused_refresh_stops_that_lane_with_exit_3_saying_how_to_authorise_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revoked Xero connection: nothing is sent to Xero, its items stay pending, QuickBooks goes on; exit 3."""
    monkeypatch.chdir(tmp_path)
    set_credentials(monkeypatch)
    work = [("xero", "x1"), ("xero", "x2"), ("quickbooks", "q1"), ("quickbooks", "q2")]
    with served(SimulatorSettings(faults=faults())) as sim:
        sim.simulator.revoke("xero")
        result = CliRunner().invoke(
            main, ["run", str(job(tmp_path, work)), "--config", str(config(tmp_path, sim.url))]
        )
        stats = sim.simulator.stats()
    assert result.exit_code == 3, result.output
    tokens = tmp_path / "xero.refresh-token"
    assert (
        f"xero: Xero refused the refresh token in {tokens} (HTTP 400: invalid_grant: The refresh token "
        "is invalid, expired or revoked)"
    ) in result.stdout
    assert "Authorise batchvoid again (README: 'Authorising Xero and QuickBooks')" in result.stdout
    assert f"write the new refresh token to {tokens}, then run the same command again" in result.stdout
    assert stats["xero"]["requests"] == 1  # the refresh; no void went out without a token
    assert tokens.read_text() == REFRESH_TOKENS["xero"] + "\n"  # unchanged
    assert states(tmp_path / "batchvoid.sqlite") == {
        "xero:x1": "pending",
        "xero:x2": "pending",
        "quickbooks:q1": "voided",
        "quickbooks:q2": "voided",
    }


def test_a_rehearsal_refreshes_in_memory_and_never_touches_the_real_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --simulate` with short tokens: it refreshes from the simulator's own connection and leaves the
    configured refresh token file as it was."""
    monkeypatch.chdir(tmp_path)
    cfg = config(tmp_path, "https://api.example", refresh="real-refresh-token")
    work = rows(20)
    lifetimes = [f"--fault={kind}:token_lifetime_s={LIFETIME_S},latency_ms=20" for kind in OAUTH]
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(job(tmp_path, work)),
            "--simulate",
            "--config",
            str(cfg),
            "--ledger",
            "r.sqlite",
            *lifetimes,
        ],
    )
    assert result.exit_code == 1, result.output
    for key, state in states(tmp_path / "r.sqlite").items():
        assert state in expected_state(key), (key, state)
    for kind in OAUTH:
        assert (tmp_path / f"{kind}.refresh-token").read_text() == "real-refresh-token\n"
    assert "real-refresh-token" not in result.output


@pytest.mark.slow
def test_kill_9_mid_run_loses_nothing_voids_nothing_twice_and_keeps_the_connection(tmp_path: Path) -> None:
    """SIGKILLed at random points of a run of many token lifetimes, the same command finishes the job
    and the connection in the file still works (Xero's grace covers a refresh whose answer died with us)."""
    proc = subprocess.Popen(
        [
            *BATCHVOID,
            "simulate",
            "--port",
            "0",
            "--seed",
            "7",
            *(f"--fault={k}:token_lifetime_s={LIFETIME_S},refresh_grace_s=60,latency_ms=15" for k in OAUTH),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        match = re.search(r"listening on (http://\S+)", proc.stderr.readline())
        assert match
        url = match[1]
        _kill_and_finish(tmp_path, url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def _kill_and_finish(tmp_path: Path, url: str) -> None:
    work = rows(80)
    ledger, log = tmp_path / "l.sqlite", tmp_path / "run.log"
    command = [
        *BATCHVOID,
        "run",
        str(job(tmp_path, work)),
        "--config",
        str(config(tmp_path, url)),
        "--ledger",
        str(ledger),
        "--log-file",
        str(log),
    ]
    env = {**os.environ, **{f"{k.upper()}_{r.upper()}": v for k in OAUTH for r, v in CREDENTIALS[k].items()}}
    rng = random.Random(11)
    kills = 0
    for _ in range(2):
        before = log.read_text().count('"void.') if log.exists() else 0
        run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = before + rng.randint(15, 60)
        _wait(
            lambda r=run, t=target: (
                (log.exists() and log.read_text().count('"void.') >= t) or r.poll() is not None
            )
        )
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            kills += 1
        run.wait(timeout=10)
    assert kills >= 1
    # The last run refreshes from the file the killed ones left: the connection survived them.
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert final.returncode == 1, (
        final.stdout + final.stderr
    )  # paid, missing, draft: failed, as in a clean run
    got = states(ledger)
    assert len(got) == len(work)
    for key, state in got.items():
        assert state in expected_state(key), (key, state)
    with urllib.request.urlopen(f"{url}/_sim/stats?invoices=1", timeout=5) as answer:
        stats = json.load(answer)
    voidable = {f"{p}:{i}" for p, i in work if not i.startswith(("paid_", "missing_", "void_", "draft"))}
    assert set(stats["voids_applied"]) == voidable
    assert set(stats["voids_applied"].values()) == {1}
    for kind in OAUTH:
        assert stats[kind]["tokens"] >= 3  # the job took more than two token lifetimes


def _wait(predicate: object, timeout: float = 30.0) -> None:
    """Poll a condition of a process we do not control the timing of (not a fixed sleep)."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.02)


def test_plan_shows_xeros_daily_window_and_two_requests_per_quickbooks_void(tmp_path: Path) -> None:
    """Past 5,000 a day Xero's estimate runs in days; each QuickBooks item is a read and a void."""
    work = [("xero", f"x{n}") for n in range(6_000)] + [("quickbooks", str(n)) for n in range(1_000)]
    result = CliRunner().invoke(main, ["plan", str(job(tmp_path, work)), "--simulate"])
    assert result.exit_code == 0, result.output
    assert re.search(r"│ xero +│ +6000 │ +0 │ +0 │ +6000 │ 60/60s, 5000/24h │ 28:48:00 │", result.stdout)
    assert re.search(r"│ quickbooks +│ +1000 │ +0 │ +0 │ +1000 │ 500/60s +│ +4:00 │", result.stdout)
    assert "Estimated time: 28:48:00, set by xero (6000 items at 0.0579/s)" in result.stdout
    small = CliRunner().invoke(main, ["plan", str(job(tmp_path, work[:300], "small.csv")), "--simulate"])
    assert re.search(r"│ xero +│ +300 │ .* │ +5:00 │", small.stdout)  # 300 fill no day: 60 a minute


def test_tokens_that_expire_in_flight_are_retried_a_bounded_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers slower than a token lasts: an item tries a fresh token a few times, then the lane stops (exit 3), never loops."""
    monkeypatch.chdir(tmp_path)
    set_credentials(monkeypatch)
    # Slower than a token lasts: every token has expired by the time a request with it arrives.
    slow = {kind: Faults(token_lifetime_s=0.1, latency_ms=150) for kind in OAUTH}
    work = [("quickbooks", "q1")]
    with served(SimulatorSettings(faults=slow)) as sim:
        result = CliRunner().invoke(
            main, ["run", str(job(tmp_path, work)), "--config", str(config(tmp_path, sim.url))]
        )
        stats = sim.simulator.stats()
    assert result.exit_code == 3, result.output
    assert "stopped quickbooks: the provider refused the credentials" in result.stdout
    assert stats["quickbooks"]["auth_failed"] == 1 + TOKEN_RETRIES  # the first 401, then one per fresh token


def test_the_example_job_rehearses_every_case_of_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jobs/example-oauth.csv --simulate: open voided, void confirmed by the read, paid, draft and missing failed."""
    monkeypatch.chdir(tmp_path)
    example = Path(__file__).resolve().parent.parent / "jobs" / "example-oauth.csv"
    result = CliRunner().invoke(main, ["run", str(example), "--simulate"])
    assert result.exit_code == 1, result.output
    got = states(tmp_path / "rehearsal.sqlite")
    assert sorted(got.values()) == sorted(["voided"] * 3 + ["already_void"] * 2 + ["failed"] * 4)
    assert got["xero:draft-9f8e7d6c-5b4a-4321-8fed-cba987654321"] == "failed"
    assert got["quickbooks:void-1044"] == "already_void"
