"""Run records: every run in the ledger with who, where, what and how it ended; its id on every write."""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from batchvoid import __version__
from batchvoid.audit import new_run_id, scrub_command
from batchvoid.ledger import open_ledger
from batchvoid.ledger.memory import MemoryLedger
from batchvoid.ledger.ops import Attempt
from batchvoid.ledger.sqlite import SCHEMA_VERSION
from batchvoid.run import EXIT_FAILED
from batchvoid.simulator import Simulator, SimulatorSettings
from tests.conftest import BATCHVOID, job, run_on, sim_config

pytestmark = pytest.mark.anyio


def log_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_run_is_recorded_with_who_where_and_how_it_ended(tmp_path: Path) -> None:
    """The record holds user, host, pid, version, command, targets, times, exit, counts, requests and 429s."""
    simulator = Simulator(SimulatorSettings.from_specs(["campfire:rate_limit=5/0.2s,retry_after=seconds"]))
    rows = [("campfire", f"ra{n}") for n in range(12)] + [("maple", "paid_1")]
    async with simulator.serve() as url:
        config = sim_config(url, concurrency=4)
        report = await run_on(config, job(tmp_path, rows), tmp_path, command=("batchvoid", "run", "job.csv"))
    assert report.exit_status == EXIT_FAILED
    with open_ledger(tmp_path / "ledger.sqlite", readonly=True) as ledger:
        job_ = ledger.job("job.csv")
        assert job_ is not None
        (run,) = ledger.runs(job_)
        assert (run.new.user, run.new.host, run.new.pid) == (
            getpass.getuser(),
            socket.gethostname(),
            os.getpid(),
        )
        assert run.new.version == __version__
        assert run.new.command == "batchvoid run job.csv"
        assert run.new.simulated is False
        assert run.new.targets == ledger.targets(job_)
        assert "campfire" in run.new.targets
        assert run.finished_at is not None
        assert run.started_at <= run.finished_at
        assert run.end is not None
        assert run.end.exit_status == report.exit_status
        assert run.end.counts == {"campfire": {"voided": 12}, "maple": {"failed": 1}}
        assert run.end.requests == {"campfire": 12 + simulator.stats()["campfire"]["throttled"], "maple": 1}
        assert sum(run.end.requests.values()) == report.requests
        throttled = simulator.stats()["campfire"]["throttled"]
        assert throttled > 0
        assert run.end.throttled == {"campfire": throttled}


async def test_the_run_id_is_on_every_log_line_attempt_row_and_outcome(tmp_path: Path) -> None:
    """One id per run: every JSON log line, every attempt row and every item it finished carry it."""
    simulator = Simulator(SimulatorSettings.from_specs(["campfire:rate_limit=5/0.2s,retry_after=seconds"]))
    rows = [("campfire", f"ra{n}") for n in range(10)] + [("maple", "paid_1")]
    path = job(tmp_path, rows)
    async with simulator.serve() as url:
        config = sim_config(url, concurrency=4)
        await run_on(config, path, tmp_path)
        await run_on(config, path, tmp_path, retry_failed=True)  # sends the failed item again
    with open_ledger(tmp_path / "ledger.sqlite", readonly=True) as ledger:
        job_ = ledger.job("job.csv")
        assert job_ is not None
        first, second = (run.run_id for run in ledger.runs(job_))
        assert first != second
    lines = log_lines(tmp_path / "job.csv.log")
    assert {line["run_id"] for line in lines} == {first, second}
    finished = [line for line in lines if line["event"] == "run.finished"]
    assert [line["run_id"] for line in finished] == [first, second]
    assert finished[0]["counts"] == {"campfire": {"voided": 10}, "maple": {"failed": 1}}
    assert finished[0]["exit_status"] == EXIT_FAILED
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    # The 429s, and the failed answer the redrive kept in the history: all sent by the first run.
    attempts = list(db.execute("SELECT http_status, run FROM attempts"))
    assert {run for _, run in attempts} == {first}
    assert {status for status, _ in attempts} == {429, 400}
    item_runs = dict(db.execute("SELECT invoice_id, run FROM items"))
    assert item_runs == {**{i: first for _, i in rows}, "paid_1": second}
    db.close()


def test_status_lists_the_runs_and_report_filters_by_run(tmp_path: Path) -> None:
    """`status --json` has each run's record; `report --run ID` writes only the items that run finished."""
    path = job(tmp_path, [("rapyd", "a"), ("maple", "b"), ("rapyd", "paid_c")])
    ledger = tmp_path / "l.sqlite"
    run = [*BATCHVOID, "run", str(path), "--simulate", "--ledger", str(ledger)]
    assert subprocess.run(run, capture_output=True, check=False).returncode == 1
    assert subprocess.run([*run, "--retry-failed"], capture_output=True, check=False).returncode == 1
    status = subprocess.run(
        [*BATCHVOID, "status", "--ledger", str(ledger), "--job-id", "job.csv", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    records = json.loads(status.stdout)["run_records"]
    assert [r["exit_status"] for r in records] == [1, 1]
    assert all(r["simulated"] is True and r["pid"] > 0 for r in records)
    assert records[0]["command"].startswith("batchvoid run ")
    assert records[1]["command"].endswith(" --retry-failed")
    assert records[1]["counts"] == {"maple": {"voided": 1}, "rapyd": {"failed": 1, "voided": 1}}
    assert records[1]["requests"] == {"rapyd": 2}  # the void, and the lookup its refusal asks for
    text = subprocess.run(
        [*BATCHVOID, "status", "--ledger", str(ledger), "--job-id", "job.csv"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert records[1]["run_id"] in text
    assert "sim" in text
    second = records[1]["run_id"]
    report = subprocess.run(
        [*BATCHVOID, "report", "--ledger", str(ledger), "--job-id", "job.csv", "--run", second,
         "--format", "jsonl"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert [json.loads(line)["invoice_id"] for line in report.stdout.splitlines()] == ["paid_c"]
    unknown = subprocess.run(
        [*BATCHVOID, "report", "--ledger", str(ledger), "--job-id", "job.csv", "--run", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 2
    assert "has no run 'nope'" in unknown.stderr
    assert second in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_a_version_2_ledger_gains_run_records_in_place(tmp_path: Path) -> None:
    """A schema-2 ledger is upgraded on the next run: its items are kept, and the run is recorded."""
    path = job(tmp_path, [("rapyd", "a"), ("maple", "b"), ("rapyd", "paid_c")])
    ledger = tmp_path / "old.sqlite"
    command = [*BATCHVOID, "run", str(path), "--simulate", "--ledger", str(ledger)]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 1
    with sqlite3.connect(ledger) as db:  # what batchvoid wrote before run records: schema 2
        db.execute("DROP TABLE runs")
        db.execute("ALTER TABLE items DROP COLUMN run")
        db.execute("ALTER TABLE attempts DROP COLUMN run")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.close()
    with open_ledger(ledger, readonly=True) as old:  # read as it is: no runs yet
        old_job = old.job("job.csv")
        assert old_job is not None
        assert old.runs(old_job) == []
    again = subprocess.run([*command, "--retry-failed"], capture_output=True, text=True, check=False)
    assert again.returncode == 1, again.stderr
    assert "Traceback" not in again.stderr
    with open_ledger(ledger) as upgraded:
        job_ = upgraded.job("job.csv")
        assert job_ is not None
        (run,) = upgraded.runs(job_)
        assert run.end is not None
        assert run.end.counts == {"maple": {"voided": 1}, "rapyd": {"failed": 1, "voided": 1}}
        assert [i["run"] for i in upgraded.items(job_)] == [None, None, run.run_id]
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
    db.close()


def test_the_command_line_keeps_no_secret() -> None:
    """A URL's user:password and the value of an option named for a secret are not recorded."""
    argv = ["batchvoid", "run", "j.csv", "--proxy", "http://u:hunter2@proxy:3128", "--api-key", "sk_live_1",
            "--token=abc", "--job-id", "it's mine",
            "--ledger", "postgresql://db/billing?sslmode=require&Password=pw9"]  # fmt: skip
    line = scrub_command(argv)
    assert "hunter2" not in line
    assert "sk_live_1" not in line
    assert "abc" not in line
    assert "pw9" not in line
    assert line == (
        "batchvoid run j.csv --proxy 'http://***@proxy:3128' --api-key '***' '--token=***' --job-id 'it'\"'\"'s mine'"
        " --ledger 'postgresql://db/billing?sslmode=require&Password=***'"
    )


def test_run_ids_sort_by_start_and_do_not_repeat() -> None:
    """Ids made in the same second differ; a later second sorts after."""
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50
    import datetime as dt

    early = new_run_id(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert early.startswith("20260101T000000Z-")
    assert early < min(ids)


def test_the_memory_ledger_keeps_run_records_like_sqlite() -> None:
    """The memory backend stamps attempts with the run begun and counts its 429s per provider."""
    from batchvoid.audit import new_run, run_end
    from batchvoid.models import Item

    memory = MemoryLedger.of([Item(2, "rapyd", "a"), Item(3, "maple", "b")])
    record = memory.begin_run(memory.job, new_run("r1", ["batchvoid"], simulated=True, targets={}))
    memory.claim(memory.job, "rapyd", 0, 10)
    memory.apply(
        [Attempt(0, 1, "t", "throttled", 429, 3, None), Attempt(0, 2, "t", "retryable", 503, 3, None)]
    )
    ended = memory.end_run(memory.job, record, run_end(3, {}, {"rapyd": 2}))
    assert memory.history_runs == ["r1", "r1"]
    assert ended.end is not None
    assert ended.end.throttled == {"rapyd": 1}
    assert memory.runs(memory.job) == [ended]
