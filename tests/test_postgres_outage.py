"""A PostgreSQL ledger that goes away mid-run: a worker stops cleanly, loses nothing, and a rerun resumes.

Each test runs a real `batchvoid run` process against a simulator (its own thread, on loopback)
and cuts it off from its database while it sends: its connections killed by the server
(pg_terminate_backend), or the server stopped and started again (a throwaway server of the
test's own, as .ci/postgres starts them). The worker must end with one `error:` line naming
the database, exit 3 and no traceback; the rerun must void what is left, each invoice once.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from batchvoid.simulator import Simulator, SimulatorSettings
from batchvoid.simulator.credentials import CREDENTIALS
from tests.conftest import BATCHVOID, PG_ENV, job, no_postgres
from tests.test_scale_out import ROLES, outcomes_logged, serve_on_a_thread

pytestmark = pytest.mark.slow
CI_POSTGRES = Path(__file__).parent.parent / ".ci" / "postgres"


@pytest.fixture
def threaded_simulator() -> Iterator[tuple[Simulator, str]]:
    """The simulator on its own thread and loop, answering after 20 ms: the worker is another process."""
    with serve_on_a_thread(Simulator(SimulatorSettings.from_specs(["latency_ms=20"]))) as served:
        yield served


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "outage.toml"
    path.write_text(
        "[defaults]\nconcurrency = 4\ntimeout_s = 5\n"
        + "".join(
            f'[providers.{p}]\ntype = "{p}"\nbase_url = "{url}"\nrate_limits = ["400/1s"]\n'
            + "".join(f'{role}_env = "SIM_{p.upper()}_{role.upper()}"\n' for role in roles)
            for p, roles in ROLES.items()
        )
    )
    return path


def env() -> dict[str, str]:
    found = {**os.environ, "BATCHVOID_LEASE_S": "2"}
    for p, roles in ROLES.items():
        found.update({f"SIM_{p.upper()}_{role.upper()}": CREDENTIALS[p][role] for role in roles})
    return found


def start(command: list[str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*command, "--log-file", str(log)],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_outcomes(proc: subprocess.Popen[str], log: Path, count: int) -> None:
    deadline = time.monotonic() + 30
    while outcomes_logged(log) < count:
        assert time.monotonic() < deadline, "the worker did not get going"
        assert proc.poll() is None, f"the worker ended before the outage: {proc.communicate()}"
        time.sleep(0.02)


def assert_stopped_cleanly(proc: subprocess.Popen[str], ledger: str) -> str:
    """The worker ends within a lease or so: exit 3, one error line naming the database, no traceback."""
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 3, (out, err)
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert ledger.rpartition("@")[2] in errors[0]  # names the database (without a password)
    assert "run the same command again" in errors[0]
    return errors[0]


def assert_resumed(
    simulator: Simulator, url: str, rows: list[tuple[str, str]], command: list[str], log: Path
) -> str:
    """The same command again: exit 0, every invoice voided exactly once (the ones in flight resent with their keys)."""
    rerun = subprocess.run(
        [*command, "--log-file", str(log)], env=env(), capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr
    with urllib.request.urlopen(f"{url}/_sim/stats?invoices=1", timeout=5) as answer:
        stats = json.load(answer)
    assert sorted(stats["voids_applied"]) == sorted(f"{p}:{i}" for p, i in rows)
    assert set(stats["voids_applied"].values()) == {1}
    return rerun.stderr


def run_command(tmp_path: Path, url: str, ledger: str, rows: list[tuple[str, str]]) -> list[str]:
    """`batchvoid run` of a job of `rows` against the simulator at `url`, on `ledger`, quiet."""
    job_file, config_file = job(tmp_path, rows), config(tmp_path, url)
    return [*BATCHVOID, "run", str(job_file), "--config", str(config_file), "--ledger", ledger, "-q"]


def rows_of(n: int) -> list[tuple[str, str]]:
    return [(p, f"inv{k}") for k in range(n) for p in ROLES]


def test_a_worker_whose_connections_are_killed_stops_cleanly_and_a_rerun_resumes(
    tmp_path: Path, pg_url: str, threaded_simulator: tuple[Simulator, str]
) -> None:
    """pg_terminate_backend on every connection of the worker mid-run: exit 3, one error line; the rerun finishes the job."""
    simulator, url = threaded_simulator
    rows = rows_of(150)
    command = run_command(tmp_path, url, pg_url, rows)
    proc = start(command, tmp_path / "w.log")
    try:
        wait_for_outcomes(proc, tmp_path / "w.log", 30)
        database = pg_url.rpartition("/")[2]
        with psycopg.connect(pg_url, autocommit=True) as db:
            killed = db.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND application_name = 'batchvoid'",
                (database,),
            ).fetchone()
        assert killed is not None
        assert killed[0] >= 2  # the work, the heartbeat (and the limits, once it reserved)
        assert_stopped_cleanly(proc, pg_url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    with psycopg.connect(pg_url, autocommit=True) as db:  # it left through a new connection ...
        assert db.execute("SELECT state FROM batchvoid.workers").fetchall() == [("left",)]
        assert db.execute("SELECT count(*) FROM batchvoid.items WHERE worker_id IS NOT NULL").fetchone() == (
            0,
        )
    rerun = assert_resumed(simulator, url, rows, command, tmp_path / "rerun.log")
    assert "Joining" not in rerun  # ... so the rerun waits for no lease to run out


@pytest.fixture
def own_server() -> Iterator[tuple[str, Path]]:
    """A throwaway PostgreSQL server of this test's own (it gets stopped): its URL and directory."""
    if not os.environ.get(PG_ENV):  # as the pg_url fixture: no server here means none to start either
        no_postgres()
    started = subprocess.run(
        [str(CI_POSTGRES), "start"], capture_output=True, text=True, timeout=60, check=True
    )
    found = dict(part.split("=", 1) for part in started.stdout.split()[1:])
    directory = Path(found["PG_TMP"])
    try:
        yield found[PG_ENV], directory
    finally:
        subprocess.run(
            [str(CI_POSTGRES), "stop", str(directory)], capture_output=True, timeout=60, check=False
        )


def pg_ctl(directory: Path, *args: str) -> None:
    binary = Path((directory / "bin").read_text().strip()) / "pg_ctl"
    command = [str(binary), "-D", str(directory / "data"), "-w", *args]
    if os.getuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, capture_output=True, timeout=60, check=True)


def test_a_server_that_stops_mid_run_stops_the_worker_cleanly_and_a_rerun_resumes_once_it_is_back(
    tmp_path: Path, own_server: tuple[str, Path], threaded_simulator: tuple[Simulator, str]
) -> None:
    """The server shuts down mid-run (then refuses connections): exit 3, one error line; started again, the rerun finishes."""
    simulator, url = threaded_simulator
    ledger, directory = own_server
    rows = rows_of(150)
    command = run_command(tmp_path, url, ledger, rows)
    proc = start(command, tmp_path / "w.log")
    try:
        wait_for_outcomes(proc, tmp_path / "w.log", 30)
        pg_ctl(directory, "stop", "-m", "fast")
        assert_stopped_cleanly(proc, ledger)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    pg_ctl(directory, "restart", "-l", str(directory / "server.log"))  # with the options it last ran with
    assert_resumed(simulator, url, rows, command, tmp_path / "rerun.log")
