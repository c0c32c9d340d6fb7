"""End to end: 3 `batchvoid run` processes share one job on a PostgreSQL ledger; one is killed with -9.

One simulator (in this process, on a loopback port, so its arrival times are at hand) enforces
a window of its own; the workers keep two, globally, through the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import psycopg
import pytest

from batchvoid.keys import idempotency_key
from batchvoid.simulator import Simulator, SimulatorSettings
from batchvoid.simulator.credentials import CREDENTIALS
from tests.conftest import BATCHVOID, job
from tests.test_run import TRANSIT_S, most_within

pytestmark = pytest.mark.slow
PROVIDERS = ("rapyd", "chargeover")
WINDOWS = ((20, 1.0), (60, 5.0))  # per provider, held across all workers; the simulator enforces 20/1s
ROLES = {"chargeover": ("username", "password"), "rapyd": ("access_key", "secret_key")}


@contextmanager
def serve_on_a_thread(simulator: Simulator) -> Iterator[tuple[Simulator, str]]:
    """The simulator on its own thread and loop, while the block runs: the workers are other processes."""
    ready, stop = threading.Event(), threading.Event()
    urls: list[str] = []

    async def serve() -> None:
        async with simulator.serve() as url:
            urls.append(url)
            ready.set()
            while not stop.is_set():
                await anyio.sleep(0.05)

    thread = threading.Thread(target=anyio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield simulator, urls[0]
    finally:
        stop.set()
        thread.join(10)


@pytest.fixture
def threaded_simulator() -> Iterator[tuple[Simulator, str]]:
    """The simulator, enforcing 20/1s, on its own thread and loop."""
    with serve_on_a_thread(
        Simulator(SimulatorSettings.from_specs(["rate_limit=20/1s", "latency_ms=40"]))
    ) as served:
        yield served


def config(tmp_path: Path, url: str) -> Path:
    limits = ", ".join(f'"{count}/{period:g}s"' for count, period in WINDOWS)
    path = tmp_path / "scale.toml"
    path.write_text(
        "[defaults]\nconcurrency = 4\ntimeout_s = 5\n"
        + "".join(
            f'[providers.{p}]\ntype = "{p}"\nbase_url = "{url}"\nrate_limits = [{limits}]\n'
            + "".join(f'{role}_env = "SIM_{p.upper()}_{role.upper()}"\n' for role in roles)
            for p, roles in ROLES.items()
        )
    )
    return path


def outcomes_logged(log: Path) -> int:
    return log.read_text().count('"void.') if log.exists() else 0


def test_three_workers_share_one_job_and_survive_a_kill_9(
    tmp_path: Path, pg_url: str, threaded_simulator: tuple[Simulator, str]
) -> None:
    """Every invoice voided exactly once; the dead worker's items resent with their keys; no window exceeded; 0 429s."""
    simulator, url = threaded_simulator
    rows = [(p, f"inv{n}") for n in range(90) for p in PROVIDERS]
    path = job(tmp_path, rows)
    env = {**os.environ, "BATCHVOID_LEASE_S": "3"}
    for p, roles in ROLES.items():
        env.update({f"SIM_{p.upper()}_{role.upper()}": CREDENTIALS[p][role] for role in roles})
    logs = [tmp_path / f"w{k}.log" for k in range(3)]
    command = [*BATCHVOID, "run", str(path), "--config", str(config(tmp_path, url)), "--ledger", pg_url, "-q"]
    procs = [
        subprocess.Popen(
            [*command, "--log-file", str(log)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for log in logs
    ]
    try:
        deadline = time.monotonic() + 30
        while outcomes_logged(logs[0]) < 15:
            assert time.monotonic() < deadline, "worker 0 did not get going"
            assert procs[0].poll() is None, "worker 0 ended before it was killed"
            time.sleep(0.02)
        procs[0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        procs[0].wait(10)
        with psycopg.connect(pg_url, autocommit=True) as db:
            (dead,) = db.execute(
                "SELECT id FROM batchvoid.workers WHERE pid = %s", (procs[0].pid,)
            ).fetchone()
            held = dict(
                db.execute(
                    "SELECT provider || ':' || invoice_id, idempotency_key FROM batchvoid.items WHERE worker_id = %s",
                    (dead,),
                ).fetchall()
            )
            while db.execute("SELECT 1 FROM batchvoid.items WHERE worker_id = %s", (dead,)).fetchone():
                assert time.monotonic() - killed < 10, "the dead worker's items were never taken over"
                time.sleep(0.05)
            takeover_s = time.monotonic() - killed
        results = [proc.communicate(timeout=60) for proc in procs[1:]]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    for proc, (_, err) in zip(procs[1:], results, strict=True):
        assert proc.returncode == 0, err  # the survivors finish the job, and say it is done
    assert held, "worker 0 held nothing when it was killed"
    assert takeover_s < 3 + 3  # within the lease (3 s) and a heartbeat's reap

    with urllib.request.urlopen(f"{url}/_sim/stats?invoices=1", timeout=5) as answer:
        stats = json.load(answer)
    assert stats["totals"]["throttled"] == 0
    assert sorted(stats["voids_applied"]) == sorted(f"{p}:{i}" for p, i in rows)
    assert set(stats["voids_applied"].values()) == {1}  # every invoice voided exactly once

    job_id = path.name
    for invoice, key in held.items():  # resent by a survivor, with the key it always had
        provider, invoice_id = invoice.split(":", 1)
        assert key == idempotency_key(job_id, provider, invoice_id)
    resent = {}
    for log in logs[1:]:
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if (
                event.get("event", "").startswith("void.")
                and f"{event['provider']}:{event['invoice_id']}" in held
            ):
                resent[f"{event['provider']}:{event['invoice_id']}"] = event["idempotency_key"]
    assert resent == held

    for provider in PROVIDERS:
        arrivals = simulator.arrivals[provider]
        assert len(arrivals) >= 90
        for count, period in WINDOWS:
            most = most_within(arrivals, period - TRANSIT_S)
            assert most <= count, f"{provider}: {most} requests within {period - TRANSIT_S:g}s"
    status = subprocess.run(
        [*BATCHVOID, "status", "--ledger", pg_url, "--job-id", job_id, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    shown = json.loads(status.stdout)
    assert shown["totals"]["voided"] + shown["totals"]["already_void"] == len(rows)
    assert sorted(w["state"] for w in shown["workers"]) == ["dead", "left", "left"]
    assert [w["pid"] for w in shown["workers"] if w["state"] == "dead"] == [procs[0].pid]
    assert sum(w["done"] for w in shown["workers"]) == len(rows)  # each outcome written once, by its owner
    table = subprocess.run(
        [*BATCHVOID, "status", "--ledger", pg_url, "--job-id", job_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert "3 workers, 0 live" in table

    # Every worker's run is a record of the job: the killed one died with no end.
    records = {r["pid"]: r for r in shown["run_records"]}
    assert sorted(records) == sorted(proc.pid for proc in procs)
    assert (records[procs[0].pid]["exit_status"], records[procs[0].pid]["alive"]) == (None, False)
    assert [records[proc.pid]["exit_status"] for proc in procs[1:]] == [0, 0]
    assert "died" in table
    with psycopg.connect(pg_url) as db:  # each attempt and outcome carries the run of the worker that made it
        assert db.execute(
            "SELECT count(*) FROM batchvoid.attempts a LEFT JOIN batchvoid.runs r ON r.worker_id = a.worker_id"
            " WHERE a.run IS DISTINCT FROM r.run_id"
        ).fetchone() == (0,)
        by_run = dict(db.execute("SELECT run, count(*) FROM batchvoid.items GROUP BY run").fetchall())
    assert set(by_run) <= {r["run_id"] for r in records.values()}
    assert sum(by_run.values()) == len(rows)
    for log, proc in zip(logs, procs, strict=True):
        assert {json.loads(line)["run_id"] for line in log.read_text().splitlines()} == {
            records[proc.pid]["run_id"]
        }
    totals = stats["totals"]
    print(
        f"\nkill -9: {len(held)} items held, taken over {takeover_s:.2f}s after the kill; "
        f"{totals['requests']} requests for {len(rows)} invoices, {totals['idempotent_replays']} replays of a key"
    )
