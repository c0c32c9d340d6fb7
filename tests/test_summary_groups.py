"""At scale the end-of-run summary names the first few failed items, then counts the rest by reason."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from batchvoid.run import FAILURES_SHOWN
from batchvoid.summary import render
from tests.conftest import job, run_on, sim_config

pytestmark = pytest.mark.anyio


async def test_failures_past_the_first_few_are_counted_per_reason(
    sim: tuple[object, str], tmp_path: Path
) -> None:
    """14 failed items: 5 named, then a count per (provider, reason) summing to 14, and the report command."""
    _, url = sim
    rows = []
    for n in range(8):
        rows += [("chargeover", f"paid_{n}"), ("chargeover", f"ok_{n}")]
    for n in range(6):
        rows += [("sellapp", f"missing_{n}"), ("sellapp", f"ok_{n}")]
    report = await run_on(sim_config(url), job(tmp_path, rows), tmp_path)
    out = io.StringIO()
    render(report, Console(file=out, width=200), ledger=tmp_path / "ledger.sqlite")
    text = out.getvalue()
    named = [
        line for line in text.splitlines() if line.startswith(("  chargeover paid_", "  sellapp missing_"))
    ]
    assert len(named) == FAILURES_SHOWN
    assert "14 items failed:" in text
    assert f"... and {14 - FAILURES_SHOWN} more. Failed items by reason:" in text
    assert "  8  chargeover: HTTP 400: Cannot void a paid invoice." in text
    assert "  6  sellapp: HTTP 404: Invoice not found." in text
    assert "batchvoid report --ledger" in text
    assert "--state failed -o failed.csv" in text
