"""A real run on a terminal asks before it voids; --yes and a run off a terminal do not."""

from __future__ import annotations

import os
import pty
import select
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BATCHVOID, job
from tests.test_crash import unlimited_config

pytestmark = pytest.mark.slow


def on_terminal(command: list[str], env: dict[str, str], answer: str | None) -> tuple[int, str]:
    """Run `command` with a pseudo-terminal as stdin and stderr; type `answer` when asked."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env, text=True)
    os.close(slave)
    screen, typed = b"", False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        if answer is not None and not typed and b"to go on: " in screen:
            os.write(master, answer.encode() + b"\n")
            typed = True
        if proc.poll() is not None and not ready:
            break
    os.close(master)
    out, _ = proc.communicate(timeout=10)
    return proc.returncode, screen.decode(errors="replace").replace("\r\n", "\n") + out


@pytest.fixture
def real_run(
    tmp_path: Path, standalone_simulator: tuple[str, dict[str, str]]
) -> tuple[list[str], dict[str, str]]:
    url, sim_env = standalone_simulator
    config = unlimited_config(tmp_path, url)
    rows = [("rapyd", "c1"), ("rapyd", "c2"), ("maple", "c3")]
    command = [*BATCHVOID, "run", str(job(tmp_path, rows)), "--config", str(config),
               "--ledger", str(tmp_path / "l.sqlite")]  # fmt: skip
    return command, {**os.environ, **sim_env, "COLUMNS": "120"}


def voided(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    with sqlite3.connect(ledger) as db:
        (n,) = db.execute("SELECT count(*) FROM items WHERE state = 'voided'").fetchone()
    db.close()
    return int(n)


def test_a_wrong_answer_sends_nothing(tmp_path: Path, real_run: tuple[list[str], dict[str, str]]) -> None:
    """On a terminal the plan and each target are shown, then 'Type 3 or yes'; 'no' is exit 2, nothing sent."""
    command, env = real_run
    status, screen = on_terminal(command, env, "no")
    assert status == 2, screen
    assert "Each profile sends to:" in screen
    assert "rapyd: rapyd at http://127.0.0.1:" in screen
    assert "Type 3 or yes to go on: " in screen
    assert "Not confirmed: nothing was sent." in screen
    assert voided(tmp_path / "l.sqlite") == 0


@pytest.mark.parametrize("answer", ["3", "yes"])
def test_the_count_or_yes_goes_on(
    tmp_path: Path, real_run: tuple[list[str], dict[str, str]], answer: str
) -> None:
    """Typing the number of items, or yes, runs the job."""
    command, env = real_run
    status, screen = on_terminal(command, env, answer)
    assert status == 0, screen
    assert voided(tmp_path / "l.sqlite") == 3


def test_limit_is_the_count_asked_for(tmp_path: Path, real_run: tuple[list[str], dict[str, str]]) -> None:
    """With --limit 1 the question is about 1 item, and 1 is sent."""
    command, env = real_run
    status, screen = on_terminal([*command, "--limit", "1"], env, "1")
    assert "Type 1 or yes to go on: " in screen
    assert status == 3, screen
    assert voided(tmp_path / "l.sqlite") == 1


def test_yes_and_no_terminal_do_not_ask(tmp_path: Path, real_run: tuple[list[str], dict[str, str]]) -> None:
    """--yes on a terminal, and any run whose stdin is not a terminal (cron), start without a question."""
    command, env = real_run
    status, screen = on_terminal([*command, "--yes", "--provider", "rapyd"], env, None)
    assert status == 3, screen
    assert "to go on" not in screen
    assert voided(tmp_path / "l.sqlite") == 2
    cron = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=30
    )
    assert cron.returncode == 0, cron.stderr
    assert "to go on" not in cron.stderr
    assert voided(tmp_path / "l.sqlite") == 3
