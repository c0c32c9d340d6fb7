"""Job file quoting end to end: a broken quote sends nothing; a spreadsheet export round-trips."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal
from click.testing import CliRunner

from batchvoid import config as configuration
from batchvoid import jobfile
from batchvoid.cli import main
from batchvoid.ledger import open_ledger
from batchvoid.models import Item
from batchvoid.preflight import simulator_env
from batchvoid.run import EXIT_OK, EXIT_USAGE
from batchvoid.simulator import Simulator
from tests.conftest import run_on, sim_config


def ten_lines(changed: dict[int, str]) -> str:
    """A header and nine rows, with the lines numbered in `changed` replaced."""
    lines = ["provider,invoice_id,note"] + [f"rapyd,inv_{n},note {n}" for n in range(2, 11)]
    return "".join(changed.get(number, text) + "\n" for number, text in enumerate(lines, start=1))


@pytest.fixture
def served() -> Iterator[tuple[Simulator, str]]:
    """A simulator serving from its own thread, so the real CLI can run in this one."""
    simulator = Simulator()
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(simulator.serve()) as url,
    ):
        yield simulator, url


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({4: 'rapyd,inv_4,"call me'}, "line 4: a quote opens a cell here and never closes"),
        (
            {4: 'rapyd,inv_4,"call me', 6: 'rapyd,inv_6,5 in"'},
            "line 4: a quoted cell opens here and runs on to line 6, taking in line 5",
        ),
    ],
    ids=["never-closed", "closed-by-a-later-stray-quote"],
)
def test_stray_quote_is_exit_2_and_nothing_is_sent(
    served: tuple[Simulator, str], tmp_path: Path, changed: dict[int, str], message: str
) -> None:
    """`run` with a stray quote on line 4 of 10 exits 2 naming the file and line, sends nothing, records no job."""
    simulator, url = served
    config = tmp_path / "sim.toml"
    config.write_text(f'[providers.rapyd]\ntype = "rapyd"\nbase_url = "{url}"\nrate_limits = []\n')
    env = simulator_env(configuration.load(config))
    job, ledger = tmp_path / "march.csv", tmp_path / "ledger.sqlite"
    command = ["run", str(job), "--config", str(config), "--ledger", str(ledger), "--quiet"]
    job.write_text(ten_lines(changed))

    refused = CliRunner().invoke(main, command, env=env)
    assert refused.exit_code == EXIT_USAGE, refused.output
    assert f"error: {job} {message}" in refused.stderr
    assert "nothing was sent" in refused.stderr
    assert simulator.arrivals["rapyd"] == []
    with open_ledger(ledger) as book:
        assert book.jobs() == []

    job.write_text(ten_lines({**changed, 4: 'rapyd,inv_4,"call me"'}))  # the quote closed, and only that
    fixed = CliRunner().invoke(main, command, env=env)
    assert fixed.exit_code == EXIT_OK, fixed.output
    assert len(simulator.arrivals["rapyd"]) == 9


EXPORT = (  # as a spreadsheet saves it: UTF-8 BOM, CRLF, quoting only where a cell needs it
    "\ufeffprovider,invoice_id,customer,note,memo\r\n"
    'rapyd,inv_1,"Acme, Inc.","Ship to:\nZürich, 8001",plain\r\n'
    'chargeover,inv_2,"Globex ""West""","line one\r\nline two",\r\n'
    'rapyd,inv_3,Ünïcødé 東京 ✓," padded ","say ""hi"", then leave"\r\n'
    'rapyd,inv_4,Old Mac,"one\rtwo",x\r\n'  # a bare CR inside a cell (classic Mac line end)
)
METADATA = {
    "inv_1": {"customer": "Acme, Inc.", "note": "Ship to:\nZürich, 8001", "memo": "plain"},
    "inv_2": {"customer": 'Globex "West"', "note": "line one\r\nline two", "memo": ""},
    "inv_3": {"customer": "Ünïcødé 東京 ✓", "note": " padded ", "memo": 'say "hi", then leave'},
    "inv_4": {"customer": "Old Mac", "note": "one\rtwo", "memo": "x"},
}


@pytest.mark.anyio
async def test_spreadsheet_export_metadata_round_trips_through_report(
    sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    """A spreadsheet export voided on the simulator reports back exactly its metadata, in CSV and JSONL."""
    _, url = sim
    job = tmp_path / "export.csv"
    job.write_bytes(EXPORT.encode("utf-8"))
    assert (await run_on(sim_config(url), job, tmp_path)).exit_status == EXIT_OK
    ledger = str(tmp_path / "ledger.sqlite")
    runner = CliRunner()
    for name in ("report.csv", "report.jsonl"):
        result = runner.invoke(main, ["report", "--ledger", ledger, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output

    with (tmp_path / "report.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["invoice_id"]: {k: r[k] for k in ("customer", "note", "memo")} for r in rows} == METADATA
    assert [(r["invoice_id"], r["line"]) for r in rows] == [
        ("inv_1", "2"),
        ("inv_2", "4"),
        ("inv_3", "6"),
        ("inv_4", "7"),
    ]
    lines = (tmp_path / "report.jsonl").read_text(encoding="utf-8").splitlines()
    assert {r["invoice_id"]: r["metadata"] for r in map(json.loads, lines)} == METADATA

    # The CSV report is a job file too, and reads back with the same metadata.
    again = list(jobfile.read(tmp_path / "report.csv", configuration.builtin().profiles))
    assert all(isinstance(item, Item) for item in again)
    assert {
        i.invoice_id: {k: i.metadata[k] for k in ("customer", "note", "memo")}
        for i in again
        if isinstance(i, Item)
    } == METADATA
