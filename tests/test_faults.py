"""Faults around a real run: a full disk, a lost or damaged ledger, an unwritable log, read-only media.

Each ends in one `error:` line naming the file and what to do, with exit 2 when nothing was sent and
3 when the run stopped with items left, never a traceback on the terminal; once the fault is fixed,
the same command finishes the job with every invoice voided exactly once at the provider.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchvoid.ledger.sqlite import SCHEMA_VERSION
from tests.conftest import BATCHVOID, job
from tests.test_crash import PROVIDERS, states, unlimited_config, wait_for

pytestmark = pytest.mark.slow


def finished(ledger: Path) -> int:
    return sum(n for state, n in states(ledger).items() if state not in ("pending", "in_flight"))


def voided_once(url: str, rows: list[tuple[str, str]]) -> None:
    """Every invoice of `rows` went from open to void exactly once at the simulator."""
    with urllib.request.urlopen(f"{url}/_sim/stats?invoices=1", timeout=5) as answer:
        applied = json.load(answer)["voids_applied"]
    assert set(applied) == {f"{p}:{i}" for p, i in rows}
    assert set(applied.values()) == {1}


def requests_seen(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=5) as answer:
        return int(json.load(answer)["totals"]["requests"])


def one_error_line(out: str, err: str) -> str:
    """The run's one `error:` line; no traceback anywhere on the terminal."""
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small file system of its own (tmpfs, 16 MB) that a test can fill up or remount read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write to `path` until its file system has no space left."""
    chunk = b"\0" * (1 << 16)
    with contextlib.suppress(OSError), path.open("wb", buffering=0) as f:
        while True:
            f.write(chunk)


class Job:
    """A 1,000-item job against a standalone simulator, run with one command line."""

    def __init__(self, tmp_path: Path, simulator: tuple[str, dict[str, str]], ledger: Path, name: str):
        self.url, sim_env = simulator
        self.rows = [(p, f"{name}{n}") for n in range(200) for p in PROVIDERS]
        self.ledger = ledger
        self.log = tmp_path / "run.log"
        config = unlimited_config(tmp_path, self.url)
        self.command = [*BATCHVOID, "run", str(job(tmp_path, self.rows)), "--config", str(config)]
        self.command += ["--ledger", str(ledger), "--log-file", str(self.log)]
        self.env = {**os.environ, **sim_env}

    def start(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.command, *extra], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *extra], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )

    def finish_and_check(self) -> None:
        """The same command again: exit 0, every item done, every invoice voided once."""
        again = self.run()
        assert again.returncode == 0, again.stderr
        assert set(states(self.ledger)) <= {"voided", "already_void"}
        assert sum(states(self.ledger).values()) == len(self.rows)
        voided_once(self.url, self.rows)


def test_a_full_disk_under_the_ledger_mid_run_is_exit_3_and_the_rerun_loses_nothing(
    tmp_path: Path, tmpfs: Path, standalone_simulator: tuple[str, dict[str, str]]
) -> None:
    """The ledger's disk fills mid-run: one error line naming the ledger and 'full', exit 3; freed, the same command finishes."""
    work = Job(tmp_path, standalone_simulator, tmpfs / "ledger.sqlite", "df")
    proc = work.start()
    wait_for(lambda: finished(work.ledger) >= 100)
    fill(tmpfs / "filler")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    line = one_error_line(out, err)
    assert str(work.ledger) in line
    assert "the disk that holds it is full. Free space there" in line
    assert "Traceback" in work.log.read_text()  # the details go to the log file instead
    (tmpfs / "filler").unlink()
    work.finish_and_check()


def test_a_ledger_moved_away_mid_run_stops_it_and_the_restored_ledger_finishes(
    tmp_path: Path, standalone_simulator: tuple[str, dict[str, str]]
) -> None:
    """SQLite would write on into a moved or deleted ledger unseen: the run stops (exit 3); put back, the job finishes."""
    work = Job(tmp_path, standalone_simulator, tmp_path / "ledger.sqlite", "mv")
    proc = work.start()
    wait_for(lambda: finished(work.ledger) >= 100)
    aside = tmp_path / "ledger.sqlite.aside"
    work.ledger.rename(aside)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    line = one_error_line(out, err)
    assert "deleted or replaced while this run was writing to it" in line
    assert "Put the ledger back" in line
    aside.rename(work.ledger)
    work.finish_and_check()


def test_a_log_file_on_a_full_disk_stops_the_run_with_exit_3(
    tmp_path: Path, standalone_simulator: tuple[str, dict[str, str]]
) -> None:
    """Writes to the log failing (no space) stop the run: one line naming the log and the cause, exit 3; nothing lost."""
    work = Job(tmp_path, standalone_simulator, tmp_path / "ledger.sqlite", "lf")
    proc = work.start("--log-file", "/dev/full")  # the last --log-file wins
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    line = one_error_line(out, err)
    assert "/dev/full: cannot write the log file: No space left on device: free space" in line
    assert states(work.ledger).get("pending", 0) + states(work.ledger).get("in_flight", 0) > 0
    work.finish_and_check()


def test_a_log_file_that_cannot_be_opened_is_exit_2_with_nothing_sent(
    tmp_path: Path, standalone_simulator: tuple[str, dict[str, str]]
) -> None:
    """A log file in a directory that does not exist is exit 2 before any request; the directory is not created."""
    work = Job(tmp_path, standalone_simulator, tmp_path / "ledger.sqlite", "lo")
    result = work.run("--log-file", str(tmp_path / "missing" / "run.log"))
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stdout, result.stderr)
    assert "cannot open the log file: No such file or directory: its directory does not exist" in line
    assert not (tmp_path / "missing").exists()
    assert requests_seen(work.url) == 0


def test_a_damaged_ledger_is_refused_and_the_restored_backup_resumes(
    tmp_path: Path, standalone_simulator: tuple[str, dict[str, str]]
) -> None:
    """Garbage over the ledger's pages: exit 2 saying it is damaged and to restore a backup, not to discard it."""
    work = Job(tmp_path, standalone_simulator, tmp_path / "ledger.sqlite", "dm")
    first = work.run()
    assert first.returncode == 0, first.stderr
    sent = requests_seen(work.url)
    backup = shutil.copy(work.ledger, tmp_path / "backup.sqlite")
    with work.ledger.open("r+b") as f:
        f.seek(4096)  # page 1 (the header and the schema) stays; every other page is garbage
        f.write(os.urandom(work.ledger.stat().st_size - 4096))
    damaged = work.run()
    assert damaged.returncode == 2, damaged.stderr
    line = one_error_line(damaged.stdout, damaged.stderr)
    assert "it is damaged" in line
    assert "Restore it from a backup" in line
    assert "move" not in line
    assert "aside" not in line
    assert requests_seen(work.url) == sent
    shutil.copy(backup, work.ledger)
    work.finish_and_check()
    assert requests_seen(work.url) == sent  # the restored ledger knew every item was done


def test_a_ledger_on_read_only_media_is_read_by_status_and_report_and_refused_by_run(
    tmp_path: Path, tmpfs: Path, standalone_simulator: tuple[str, dict[str, str]]
) -> None:
    """status and report read a ledger on a read-only mount; run says 'read-only file system', exit 2, sends nothing."""
    work = Job(tmp_path, standalone_simulator, tmpfs / "ledger.sqlite", "ro")
    assert work.run().returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    sent = requests_seen(work.url)
    status = subprocess.run(
        [*BATCHVOID, "status", "--ledger", str(work.ledger), "--job-id", "job.csv"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "1000" in status.stdout
    report = subprocess.run(
        [*BATCHVOID, "report", "--ledger", str(work.ledger), "--format", "jsonl"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert report.returncode == 0, report.stderr
    assert len(report.stdout.splitlines()) == 1000
    again = work.run()
    assert again.returncode == 2
    line = one_error_line(again.stdout, again.stderr)
    assert "it is on a read-only file system" in line
    assert "`batchvoid status` and `batchvoid report` read it where it is" in line
    assert requests_seen(work.url) == sent


def test_a_ledger_in_a_missing_directory_is_refused_and_never_created(tmp_path: Path) -> None:
    """A --ledger whose directory is missing (an unmounted volume?) is exit 2; no new ledger starts the job over."""
    ledger = tmp_path / "volume" / "ledger.sqlite"
    result = subprocess.run(
        [*BATCHVOID, "run", str(job(tmp_path, [("rapyd", "a")])), "--simulate", "--ledger", str(ledger)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    line = one_error_line(result.stdout, result.stderr)
    assert f"its directory {ledger.parent} does not exist" in line
    assert "a new ledger would start its jobs over" in line
    assert not ledger.parent.exists()


def test_an_older_ledger_is_upgraded_in_place_and_keeps_its_jobs(tmp_path: Path) -> None:
    """A schema-1 ledger (no targets) is migrated on first use; its job resumes, with no traceback."""
    path = job(tmp_path, [("rapyd", "a"), ("maple", "b")])
    ledger = tmp_path / "old.sqlite"
    command = [*BATCHVOID, "run", str(path), "--simulate", "--ledger", str(ledger)]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    with sqlite3.connect(ledger) as db:  # what batchvoid 0.1 wrote: schema 1
        db.execute("DROP TABLE targets")
        db.execute("ALTER TABLE jobs DROP COLUMN simulated")
        db.execute("DROP TABLE runs")
        db.execute("ALTER TABLE items DROP COLUMN run")
        db.execute("ALTER TABLE attempts DROP COLUMN run")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.close()
    status = subprocess.run(
        [*BATCHVOID, "status", "--ledger", str(ledger), "--job-id", "job.csv"], capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr  # read as it is, without upgrading
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT value FROM meta").fetchone() == ("1",)
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert "0 requests" in again.stdout
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
        assert db.execute("SELECT simulated FROM jobs").fetchone() == (1,)
    db.close()


def test_an_internal_error_is_one_line_with_the_traceback_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug inside a run prints one 'internal error' line (exit 2, nothing sent) and logs the traceback."""
    from click.testing import CliRunner

    from batchvoid.cli import main
    from batchvoid.engine import Engine

    async def broken(self: Engine) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Engine, "run", broken)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", str(job(tmp_path, [("rapyd", "a")])), "--simulate"])
    assert result.exit_code == 2
    line = one_error_line(result.stdout, result.stderr)
    assert "error: internal error: RuntimeError: boom. The traceback is in job.csv.log" in line
    log = (tmp_path / "job.csv.log").read_text()
    assert '"run.aborted"' in log
    assert "Traceback" in log


def test_plan_names_a_ledger_directory_that_does_not_exist(tmp_path: Path) -> None:
    """plan runs the same ledger checks as run: a missing directory is 'cannot run', exit 2."""
    ledger = tmp_path / "volume" / "ledger.sqlite"
    result = subprocess.run(
        [*BATCHVOID, "plan", str(job(tmp_path, [("rapyd", "a")])), "--simulate", "--ledger", str(ledger)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert f"its directory {ledger.parent} does not exist" in result.stderr
    assert not ledger.parent.exists()
