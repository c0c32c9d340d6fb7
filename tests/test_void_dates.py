"""Campfire's void_date: the row's, else the profile's (a date, or today in a named time zone), fixed at ingest."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid import config as configuration
from batchvoid import jobfile
from batchvoid.cli import main
from batchvoid.config import Config
from batchvoid.errors import ConfigError
from batchvoid.models import Item
from batchvoid.simulator import Simulator
from tests.conftest import run_on, sim_config, write

# 01:30 UTC on the 1st: the README's cron slot, already December in London, still November in New York.
CRON_SLOT = dt.datetime(2026, 12, 1, 1, 30, tzinfo=dt.UTC)
JOB = "provider,invoice_id,void_date\ncampfire,c1,\ncampfire,c2,2026-11-15\nrapyd,r1,\n"


def campfire(config: Config, **options: str) -> Config:
    profile = config.profiles["campfire"]
    return replace(config, profiles={**config.profiles, "campfire": replace(profile, options=options)})


def dates(path: Path, config: Config) -> list[str | None]:
    items = [row for row in jobfile.read(path, config.profiles, at=CRON_SLOT) if isinstance(row, Item)]
    return [item.void_date for item in items]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "2026-12-01"),  # today, in UTC
        ({"timezone": "America/New_York"}, "2026-11-30"),
        ({"void_date": "today", "timezone": "Pacific/Auckland"}, "2026-12-01"),
        ({"void_date": "2026-11-30"}, "2026-11-30"),
    ],
)
def test_rows_without_a_void_date_get_the_profiles_fixed_once(
    tmp_path: Path, profiles: Config, options: dict[str, str], expected: str
) -> None:
    """A Campfire row without void_date gets the profile's date (or today in its zone); a row's own wins; others none."""
    path = write(tmp_path / "j.csv", JOB)
    assert dates(path, campfire(profiles, **options)) == [expected, "2026-11-15", None]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'void_date = "30/11/2026"',
            "void_date must be 'today' or a real date as YYYY-MM-DD, got '30/11/2026'",
        ),
        ('void_date = "2026-02-30"', "void_date must be 'today' or a real date"),
        ('timezone = "Europe/Londn"', "timezone 'Europe/Londn' is not a known time zone"),
    ],
)
def test_a_bad_void_date_or_timezone_names_the_profile_and_key(
    tmp_path: Path, line: str, message: str
) -> None:
    """The profile's void_date and timezone are checked when the configuration is read."""
    path = write(tmp_path / "c.toml", f'[providers.campfire]\ntype = "campfire"\n{line}\n')
    with pytest.raises(ConfigError, match=r"\[providers.campfire\]: ") as error:
        configuration.load(path)
    assert message in str(error.value)


@pytest.mark.anyio
async def test_the_date_fixed_at_ingest_is_the_one_sent_on_resume_and_in_the_report(
    sim: tuple[Simulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded with one date, resumed after the profile says another: the recorded date is sent and reported."""
    simulator, url = sim
    path = write(tmp_path / "j.csv", JOB)
    first_config = campfire(sim_config(url), void_date="2026-11-30")
    simulator.revoke("campfire")  # the first run sends nothing that counts to Campfire
    first = await run_on(first_config, path, tmp_path)
    assert first.exit_status == 3
    simulator.restore("campfire")
    later = campfire(sim_config(url), void_date="2026-12-31")  # edited after the job was recorded
    out = io.StringIO()
    again = await run_on(later, path, tmp_path, out=out)
    assert again.exit_status == 0
    assert simulator.invoice_state("campfire", "c1") == "void"
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        sent = dict(db.execute("SELECT invoice_id, void_date FROM items WHERE provider = 'campfire'"))
    db.close()
    assert sent == {"c1": "2026-11-30", "c2": "2026-11-15"}

    monkeypatch.chdir(tmp_path)
    report = CliRunner().invoke(main, ["report", "--ledger", "ledger.sqlite"])
    assert report.exit_code == 0, report.output
    by_id = {row["invoice_id"]: row["void_date"] for row in csv.DictReader(io.StringIO(report.stdout))}
    assert by_id == {"c1": "2026-11-30", "c2": "2026-11-15", "r1": ""}
