"""The command line: exit statuses, messages and the summary, through the real entry point."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid import jobfile
from batchvoid.cli import main
from batchvoid.config import builtin
from batchvoid.ledger import NewJob, open_ledger
from batchvoid.models import ItemState
from batchvoid.preflight import targets
from batchvoid.report import STATE_CHOICES
from tests.conftest import BATCHVOID

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = str(REPO / "jobs" / "example.csv")


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for var in ("RAPYD_ACCESS_KEY", "RAPYD_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def test_example_on_the_simulator_then_nothing_resent(runner: CliRunner, tmp_path: Path) -> None:
    """The README's first command: exit 1 (some invoices are paid or missing), then a rerun sends nothing."""
    first = runner.invoke(main, ["run", EXAMPLE, "--simulate"])
    assert first.exit_code == 1, first.output
    assert "17 items recorded" in first.stdout
    assert "│ total      │     10 │            3 │      4 │    17 │" in first.stdout
    assert "chargeover paid_10234: HTTP 400: Cannot void a paid invoice." in first.stdout
    assert "run.started" in first.stderr
    assert (tmp_path / "rehearsal.sqlite").exists()  # a rehearsal keeps its own ledger
    assert not (tmp_path / "batchvoid.sqlite").exists()
    assert (tmp_path / "example.csv.log").exists()

    second = runner.invoke(main, ["run", EXAMPLE, "--simulate"])
    assert second.exit_code == 1
    assert "resumed from the ledger" in second.stdout
    assert "0 requests" in second.stdout


def test_example_config_runs_on_the_simulator(runner: CliRunner) -> None:
    """config/providers.example.toml rehearses on the simulator without any credential set."""
    result = runner.invoke(
        main, ["run", EXAMPLE, "--simulate", "--config", str(REPO / "config" / "providers.example.toml")]
    )
    assert result.exit_code == 1, result.output


def test_missing_credentials_stop_before_sending(runner: CliRunner, tmp_path: Path) -> None:
    """Without --simulate, a missing credential variable is exit 2 naming it; nothing sent, and no job recorded."""
    job = tmp_path / "j.csv"
    job.write_text("provider,invoice_id\nrapyd,inv_1\n")
    args = ["run", str(job), "--config", str(REPO / "config" / "providers.example.toml")]
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert "error: " in result.stderr
    assert "needs environment variable RAPYD_ACCESS_KEY (access_key_env)" in result.stderr
    with sqlite3.connect(tmp_path / "batchvoid.sqlite") as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    db.close()
    job.write_text("provider,invoice_id\nrapyd,inv_1\nrapyd,inv_2\n")  # the fixed file is no "changed job"
    again = runner.invoke(main, args)
    assert "has changed since job" not in again.stderr
    assert "needs environment variable RAPYD_ACCESS_KEY" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", EXAMPLE, "--config", "nope.toml"], "nope.toml: no such configuration file"),
        (["run", "nope.csv", "--simulate"], "nope.csv: no such job file"),
        (["run", EXAMPLE], "no configuration: pass --config FILE"),
        (["run", EXAMPLE, "--fault", "error_rate=0.1"], "--fault and --seed only apply with --simulate"),
        (["run", EXAMPLE, "--simulate", "--fault", "eror_rate=0.1"], "eror_rate"),
    ],
)
def test_bad_usage_is_exit_2_with_a_message(runner: CliRunner, args: list[str], message: str) -> None:
    """Bad files, flags and fault specs exit 2 with a message saying what is wrong."""
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_python_dash_m_and_help() -> None:
    """`python -m batchvoid --help` works and shows an example."""
    result = subprocess.run(
        [sys.executable, "-m", "batchvoid", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode == 0
    assert "batchvoid run jobs/example.csv --simulate" in result.stdout
    assert "Exit status" in result.stdout


def test_the_readme_and_report_name_the_states_an_item_can_be_in(runner: CliRunner) -> None:
    """README's state table and report --state (its --help and the README's line) name every item state and no other: 'skipped' is refused."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("| state | meaning |\n| --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    assert [row.split("`")[1] for row in table.splitlines()] == [state.value for state in ItemState]
    assert set(STATE_CHOICES) == {state.value for state in ItemState} - {"in_flight"} | {"all"}
    assert f"`--state {'|'.join(STATE_CHOICES)}`" in readme
    help_text = runner.invoke(main, ["report", "--help"], terminal_width=200).stdout
    assert f"--state [{'|'.join(STATE_CHOICES)}]" in help_text
    refused = runner.invoke(main, ["report", "--state", "skipped"])
    assert refused.exit_code == 2
    assert "Invalid value for '--state': 'skipped' is not one of" in refused.stderr


def test_the_simulator_server_loads_only_for_a_rehearsal(tmp_path: Path) -> None:
    """Importing the CLI, or a real run's modules, leaves the simulator's server (and aiohttp.web) unloaded."""
    probe = (
        "import sys, batchvoid.cli, batchvoid.run, batchvoid.plan\n"
        "print(sorted(m for m in ('batchvoid.simulator.server', 'aiohttp.web') if m in sys.modules))\n"
        "from batchvoid.simulator import Simulator\n"
        "print('batchvoid.simulator.server' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_a_closed_stdout_ends_a_command_quietly_with_141(tmp_path: Path) -> None:
    """Writing to a pipe nobody reads (`| head -1`) exits 141 with nothing on stderr; a run keeps its own status."""
    job = tmp_path / "job.csv"  # a report of it outgrows stdout's buffer: written while rows are read
    job.write_text("provider,invoice_id\n" + "".join(f"sellapp,{n}\n" for n in range(3000)))
    (tmp_path / "one.csv").write_text("provider,invoice_id\nsellapp,1\n")
    ledger = str(tmp_path / "ledger.sqlite")
    config = builtin()
    with open_ledger(Path(ledger)) as book:  # the job, recorded as a rehearsal would record it
        rows = jobfile.read(job, config.profiles)
        new = NewJob(
            "job.csv", str(job), jobfile.sha256(job), config.fingerprint(), rows, True, targets(config)
        )
        assert book.ingest(new).recorded
    commands = {
        "status": ["status", "--ledger", ledger],
        "status --json": ["status", "--ledger", ledger, "--job-id", "job.csv", "--json"],
        "report": ["report", "--ledger", ledger, "--job-id", "job.csv"],
        "plan": ["plan", "job.csv", "--simulate", "--ledger", ledger],
        "providers": ["providers"],
        "run": ["run", "one.csv", "--simulate", "--ledger", ledger, "--quiet"],
    }
    read, write = os.pipe()
    os.close(read)  # the reader is gone before a byte is written: every write is EPIPE
    try:
        started = {
            name: subprocess.Popen(
                [sys.executable, "-m", "batchvoid", *args],
                cwd=tmp_path,
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, args in commands.items()
        }
        done = {name: (proc.wait(timeout=60), proc.communicate()[1]) for name, proc in started.items()}
    finally:
        os.close(write)
    for name, (status, stderr) in done.items():
        assert status == (0 if name == "run" else 141), (name, stderr)
        # --quiet keeps the run's start and end lines, on stderr: no error among them
        expected = ["run.started", "run.finished"] if name == "run" else []
        events = [next(w for w in line.split() if w.startswith("run.")) for line in stderr.splitlines()]
        assert events == expected, (name, stderr)
    head = subprocess.Popen(  # `| head -1`: the reader goes away after the first line
        [sys.executable, "-m", "batchvoid", "report", "--ledger", ledger, "--job-id", "job.csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert head.stdout is not None
    assert head.stdout.readline().startswith(b"provider,invoice_id,")
    head.stdout.close()
    assert head.wait(timeout=60) == 141
    assert head.communicate()[1] == b""


def test_a_closed_stderr_does_not_stop_a_run(tmp_path: Path) -> None:
    """`run ... 2>&1 | head -1`: the reader of the console is gone from the first line on, yet
    the run voids every item and exits with its own status (1: the example has paid and missing
    invoices); its summary still reaches stdout and the log file has every line."""
    read, write = os.pipe()
    os.close(read)  # every write to stderr is EPIPE
    try:
        done = subprocess.run(
            [*BATCHVOID, "run", EXAMPLE, "--simulate", "--ledger", "l.sqlite", "--progress", "plain"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=write,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 1, done.stdout
    assert "│ total      │     10 │            3 │      4 │    17 │" in done.stdout
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        left = db.execute("SELECT count(*) FROM items WHERE state IN ('pending', 'in_flight')").fetchone()
    db.close()
    assert left == (0,)
    log = (tmp_path / "example.csv.log").read_text(encoding="utf-8")
    assert log.count('"event":"void.failed"') == 4


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_simulator_stops_on_its_first_signal_while_it_serves(signum: int) -> None:
    """`batchvoid simulate` answering requests stops at once on one SIGTERM or Ctrl-C, every time:
    a KeyboardInterrupt raised inside a request's callback was lost now and then (uvloop 0.19), and
    the simulator ran on, ignoring the signal."""
    for _ in range(6):
        proc = subprocess.Popen(
            [*BATCHVOID, "simulate", "--port", "0", "--fault", "latency_ms=30,jitter_ms=20", "--seed", "5"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        try:
            url = proc.stderr.readline().rsplit(" ", 1)[-1].strip()
            answered = threading.Event()
            with ThreadPoolExecutor(4) as pool:
                for _ in range(4):
                    pool.submit(_fetch_until_gone, f"{url}/_sim/stats", answered)
                assert answered.wait(timeout=20)
                proc.send_signal(signum)  # with requests in flight
                assert proc.wait(timeout=10) == 0
            assert proc.stderr.read().strip().endswith("Simulator stopped.")
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()


def _fetch_until_gone(url: str, answered: threading.Event) -> None:
    """GET `url` again and again until the server is gone, setting `answered` at each answer."""
    with contextlib.suppress(OSError):
        while True:
            urllib.request.urlopen(url, timeout=5).read()
            answered.set()
