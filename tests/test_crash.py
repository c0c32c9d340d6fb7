"""Stopping a real `batchvoid run` process: SIGINT/SIGTERM, a second signal, and kill -9 at random points."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from batchvoid.ledger.sqlite.lock import lock_path
from tests.conftest import BATCHVOID, job

pytestmark = pytest.mark.slow
PROVIDERS = ("chargeover", "rapyd", "campfire", "maple", "sellapp")


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    """Poll a condition of a process we do not control the timing of (not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.02)


def attempts_logged(log: Path) -> int:
    """Requests answered so far, by the log: one line each (an attempt, or the item's outcome)."""
    return log.read_text().count('"void.') if log.exists() else 0


def states(ledger: Path) -> dict[str, int]:
    db = sqlite3.connect(ledger)
    try:
        return dict(db.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall())
    except sqlite3.OperationalError:  # polled while the run is still creating the ledger
        return {}
    finally:
        db.close()


def unlimited_config(tmp_path: Path, url: str = "http://127.0.0.1:9") -> Path:
    """Every provider at `url` with no rate limit, credentials from the simulator's BATCHVOID_SIM_* names."""
    roles = {
        "chargeover": ("username", "password"),
        "rapyd": ("access_key", "secret_key"),
        "campfire": ("api_key",),
        "maple": ("api_token",),
        "sellapp": ("api_key",),
    }
    config = tmp_path / "sim.toml"
    config.write_text(
        "[defaults]\nconcurrency = 3\ntimeout_s = 5\n"
        + "".join(
            f'[providers.{p}]\ntype = "{p}"\nbase_url = "{url}"\nrate_limits = []\n'
            + "".join(f'{key}_env = "BATCHVOID_SIM_{p.upper()}_{key.upper()}"\n' for key in keys)
            + ('company_id = "cmp_sim"\n' if p == "maple" else "")
            for p, keys in roles.items()
        )
    )
    return config


def rehearsal(tmp_path: Path, job_file: Path) -> tuple[list[str], Path, Path]:
    """A `batchvoid run --simulate` command with no rate limits, and its ledger and log files."""
    ledger, log = tmp_path / "l.sqlite", tmp_path / "run.log"
    config = unlimited_config(tmp_path)
    command = [*BATCHVOID, "run", str(job_file), "--simulate", "--config", str(config)]
    return [*command, "--ledger", str(ledger), "--log-file", str(log)], ledger, log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_finishes_in_flight_requests_and_exits_130(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """The first SIGINT/SIGTERM stops dispatching, lets in-flight requests finish, exits 130; rerun completes."""
    path = job(tmp_path, [(p, f"g{n}") for n in range(100) for p in PROVIDERS])
    command, ledger, log = rehearsal(tmp_path, path)
    proc = subprocess.Popen(
        [*command, "--fault", "latency_ms=200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: attempts_logged(log) >= 20)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"{signum.name}: stopping" in err
    assert "run the same command again" in out
    left = states(ledger)
    assert "in_flight" not in left  # every request in flight was allowed to finish
    assert left.get("pending", 0) > 0

    again = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert states(ledger) == {"voided": 500}


def test_second_signal_cancels_at_once_and_resume_resends_with_the_same_key(tmp_path: Path) -> None:
    """A second SIGINT cancels hanging requests at once; their items stay in flight and the next run finishes them."""
    path = job(tmp_path, [(p, f"h{n}") for n in range(20) for p in PROVIDERS])
    command, ledger, log = rehearsal(tmp_path, path)
    proc = subprocess.Popen(
        [*command, "--fault", "latency_ms=20000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: states(ledger).get("in_flight", 0) >= 5 if ledger.exists() else False)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "run.halting" in log.read_text())  # the first signal was handled
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 5
    assert "SIGINT again: stopping now" in err
    # Claimed items not yet sent went back to pending; those on the wire stay in flight.
    assert states(ledger).get("in_flight", 0) >= 1

    again = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert states(ledger) == {"voided": 100}


def test_kill_9_at_random_points_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, standalone_simulator: tuple[str, dict[str, str]]
) -> None:
    """SIGKILLed several times mid-job, the same command finishes it: the same end as a clean run, nothing twice."""
    url, sim_env = standalone_simulator
    config = unlimited_config(tmp_path, url)
    kinds = ["", "", "", "", "", "", "paid_", "void_", "missing_"]
    rows = [(p, f"{kinds[n % len(kinds)]}k{n}") for n in range(120) for p in PROVIDERS]
    path = job(tmp_path, rows)
    ledger, log = tmp_path / "l.sqlite", tmp_path / "run.log"
    command = [
        *BATCHVOID,
        "run",
        str(path),
        "--config",
        str(config),
        "--ledger",
        str(ledger),
        "--log-file",
        str(log),
    ]
    env = {**os.environ, **sim_env}
    rng = random.Random(42)
    kills = 0
    for _ in range(4):
        before = attempts_logged(log)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = before + rng.randint(10, 80)
        wait_for(lambda p=proc, t=target: attempts_logged(log) >= t or p.poll() is not None)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=10)
    assert kills >= 3
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert final.returncode == 1, final.stderr  # paid and missing invoices fail, as in a clean run

    db = sqlite3.connect(ledger)
    got = dict(db.execute("SELECT provider || ':' || invoice_id, state FROM items").fetchall())
    db.close()
    assert len(got) == len(rows)
    for (provider, invoice), state in ((key.split(":", 1), s) for key, s in got.items()):
        if invoice.startswith(("paid_", "missing_")):
            assert state == "failed", (provider, invoice)
        elif invoice.startswith("void_"):
            assert state == "already_void", (provider, invoice)
        else:  # voided by this job: on the first send, or found void when resent after a kill
            assert state in ("voided", "already_void"), (provider, invoice, state)

    with urllib.request.urlopen(f"{url}/_sim/stats?invoices=1", timeout=5) as answer:
        stats = json.load(answer)
    applied = stats["voids_applied"]
    voidable = {f"{p}:{i}" for p, i in rows if not i.startswith(("paid_", "missing_", "void_"))}
    assert set(applied) == voidable
    assert set(applied.values()) == {1}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_job_is_recorded_exits_130_and_records_nothing(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """SIGTERM/SIGINT during the ingest of a big file: exit 130 within 2 s, 'interrupted', no job, no lock; the rerun records it all."""
    rows = 300_000
    path = tmp_path / "big.csv"
    path.write_text("provider,invoice_id\n" + "".join(f"chargeover,big{n}\n" for n in range(rows)))
    ledger = tmp_path / "l.sqlite"
    command = [*BATCHVOID, "run", str(path), "--simulate", "--ledger", str(ledger)]
    lock = lock_path(ledger, "big.csv")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lock.exists)  # taken just before the job file is read
    proc.send_signal(signum)
    signalled = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - signalled < 2
    assert f"error: interrupted by {signum.name} while the job file was being recorded" in err
    assert "Traceback" not in out + err
    assert "Aborted!" not in out + err
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM items").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM locks").fetchone() == (0,)
    db.close()
    assert not lock.exists()
    if signum is not signal.SIGTERM:
        return
    again = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert again.stderr is not None
    for line in again.stderr:  # the job is recorded once the run starts sending: stop it there
        if "run.started" in line:
            break
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=30)
    assert again.returncode == 130
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT items FROM jobs").fetchone() == (rows,)
        assert db.execute("SELECT count(*) FROM items").fetchone() == (rows,)
    db.close()


def test_a_signal_during_plan_is_exit_130_and_interrupted(tmp_path: Path) -> None:
    """SIGTERM while `plan` reads a big file: 'interrupted', exit 130, no traceback, no 'Aborted!'."""
    path = tmp_path / "big.csv"
    path.write_text("provider,invoice_id\n" + "".join(f"rapyd,p{n}\n" for n in range(300_000)))
    proc = subprocess.Popen(
        [*BATCHVOID, "plan", str(path), "--simulate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        cwd=tmp_path,
    )
    wait_for(lambda: any(tmp_path.glob("batchvoid-plan-*/plan.sqlite")))  # its scratch ledger: reading
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted: nothing was sent" in err
    assert "Traceback" not in out + err
    assert "Aborted!" not in out + err
