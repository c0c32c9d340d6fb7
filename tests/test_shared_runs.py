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


def test_two_jobs_on_one_account_share_its_window_and_each_worker_exits_with_its_jobs_status(
    tmp_path: Path, pg_url: str, strict_simulator: tuple[Simulator, str]
) -> None:
    """Job a (2 workers, 2 paid invoices) and job b (1 worker) at once against chargeover: together they keep its
    10/1s (no 429); both of a's workers exit 1 listing both failures, whichever sent them; b's exits 0."""
    simulator, url = strict_simulator
    rows = {
        "a": [("chargeover", f"a-{k}") for k in range(13)]
        + [("chargeover", "paid_1"), ("chargeover", "paid_2")],
        "b": [("chargeover", f"b-{k}") for k in range(15)],
    }
    paths = {name: job(tmp_path, its, f"{name}.csv") for name, its in rows.items()}
    procs = {name: start(tmp_path, url, paths[name[0]], pg_url, name) for name in ("a1", "a2", "b")}
    results = {name: proc.communicate(timeout=60) for name, proc in procs.items()}
    for name, proc in procs.items():
        out, err = results[name]
        assert "Traceback" not in err
        if name == "b":
            assert proc.returncode == 0, results[name]
            continue
        assert proc.returncode == 1, results[name]  # the job's status: its failures, whoever sent them
        assert "paid_1" in out
        assert "paid_2" in out
    with urllib.request.urlopen(f"{url}/_sim/stats?invoices=1", timeout=5) as answer:
        stats = json.load(answer)
    assert stats["totals"]["throttled"] == 0
    assert len(stats["voids_applied"]) == 28
    arrivals = simulator.arrivals["chargeover"]
    assert len(arrivals) == 30
    assert most_within(arrivals, PERIOD - TRANSIT_S) <= COUNT
    sent = {name: outcome_times(tmp_path / f"{name}.log") for name in procs}
    assert min(sent["a1"] + sent["a2"]) < max(sent["b"])  # the two jobs sent at the same time ...
    assert min(sent["b"]) < max(sent["a1"] + sent["a2"])
    span = max(arrivals) - min(arrivals)
    assert span > (30 - COUNT) * PERIOD / COUNT * 0.9  # ... at one window's pace for both, not one each


def outcome_times(log: Path) -> list[str]:
    events = (json.loads(line) for line in log.read_text().splitlines())
    return [e["timestamp"] for e in events if e["event"].startswith("void.")]
