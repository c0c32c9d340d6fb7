"""`batchvoid run` processes sharing a PostgreSQL ledger: limits per provider account, exit statuses per job.

The processes share one configuration and one ledger, against one simulator (its own thread,
on loopback) that enforces the account's window.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchvoid.simulator import Simulator, SimulatorSettings
from batchvoid.simulator.credentials import CREDENTIALS
from tests.conftest import BATCHVOID, job
from tests.test_run import TRANSIT_S, most_within
from tests.test_scale_out import ROLES, serve_on_a_thread

pytestmark = pytest.mark.slow
COUNT, PERIOD = 10, 1.0  # the account's window: the simulator answers 429 past it


@pytest.fixture
def strict_simulator() -> Iterator[tuple[Simulator, str]]:
    with serve_on_a_thread(
        Simulator(SimulatorSettings.from_specs([f"rate_limit={COUNT}/{PERIOD:g}s", "latency_ms=20"]))
    ) as served:
        yield served


def start(tmp_path: Path, url: str, path: Path, ledger: str, name: str) -> subprocess.Popen[str]:
    """`batchvoid run` of the job file `path` against chargeover at the simulator's `url`."""
    config = tmp_path / "account.toml"
    roles = ROLES["chargeover"]
    config.write_text(
        f'[defaults]\nconcurrency = 4\n[providers.chargeover]\ntype = "chargeover"\nbase_url = "{url}"\n'
        f'rate_limits = ["{COUNT}/{PERIOD:g}s"]\n'
        + "".join(f'{role}_env = "SIM_CHARGEOVER_{role.upper()}"\n' for role in roles)
    )
    env = {
        **os.environ,
        **{f"SIM_CHARGEOVER_{role.upper()}": CREDENTIALS["chargeover"][role] for role in roles},
    }
    log = tmp_path / f"{name}.log"
    return subprocess.Popen(
        [
            *BATCHVOID,
            "run",
            str(path),
            "--config",
            str(config),
            "--ledger",
            ledger,
            "-q",
            "--log-file",
            str(log),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_jobs_against_one_account_share_its_window(
    tmp_path: Path, pg_url: str, strict_simulator: tuple[Simulator, str]
) -> None:
    """Job A and job B run at once against chargeover: together they keep its 10/1s (no 429), and both got to send."""
    simulator, url = strict_simulator
    config = tmp_path / "account.toml"
    roles = ROLES["chargeover"]
    config.write_text(
        f'[defaults]\nconcurrency = 4\n[providers.chargeover]\ntype = "chargeover"\nbase_url = "{url}"\n'
        f'rate_limits = ["{COUNT}/{PERIOD:g}s"]\n'
        + "".join(f'{role}_env = "SIM_CHARGEOVER_{role.upper()}"\n' for role in roles)
    )
    env = {
        **os.environ,
        **{f"SIM_CHARGEOVER_{role.upper()}": CREDENTIALS["chargeover"][role] for role in roles},
    }
    jobs = {
        name: job(tmp_path, [("chargeover", f"{name}-{k}") for k in range(15)], f"{name}.csv")
        for name in "ab"
    }
    procs = {
        name: subprocess.Popen(
            [
                *BATCHVOID,
                "run",
                str(path),
                "--config",
                str(config),
                "--ledger",
                pg_url,
                "-q",
                "--log-file",
                str(tmp_path / f"{name}.log"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, path in jobs.items()
    }
    results = {name: proc.communicate(timeout=60) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, results[name]
    with urllib.request.urlopen(f"{url}/_sim/stats?invoices=1", timeout=5) as answer:
        stats = json.load(answer)
    assert stats["totals"]["throttled"] == 0
    assert len(stats["voids_applied"]) == 30
    arrivals = simulator.arrivals["chargeover"]
    assert most_within(arrivals, PERIOD - TRANSIT_S) <= COUNT
    assert len(arrivals) == 30
    sent = {name: outcome_times(tmp_path / f"{name}.log") for name in jobs}
    assert min(sent["a"]) < max(sent["b"])  # the two jobs sent at the same time ...
    assert min(sent["b"]) < max(sent["a"])
    span = max(arrivals) - min(arrivals)
    assert span > (30 - COUNT) * PERIOD / COUNT * 0.9  # ... at one window's pace for both, not one each


def outcome_times(log: Path) -> list[str]:
    events = (json.loads(line) for line in log.read_text().splitlines())
    return [e["timestamp"] for e in events if e["event"].startswith("void.")]


def test_every_worker_of_a_job_exits_with_the_jobs_status_whoever_sent_its_failures(
    tmp_path: Path, pg_url: str, strict_simulator: tuple[Simulator, str]
) -> None:
    """Two workers share a job with two paid invoices: both exit 1 and list both failures, whichever of them sent them."""
    _, url = strict_simulator
    rows = [("chargeover", f"inv{k}") for k in range(14)] + [
        ("chargeover", "paid_1"),
        ("chargeover", "paid_2"),
    ]
    path = job(tmp_path, rows)
    procs = [start(tmp_path, url, path, pg_url, f"w{k}") for k in range(2)]
    results = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 1, (out, err)
        assert "paid_1" in out
        assert "paid_2" in out
        assert "Traceback" not in err
