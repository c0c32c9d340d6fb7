"""`batchvoid report --format html`: one self-contained page, checked by parsing it and in a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from batchvoid import htmlreport
from batchvoid.ledger import open_ledger
from tests.conftest import BATCHVOID, unavailable

REPO = Path(__file__).resolve().parent.parent


class Page(HTMLParser):
    """What a reader (and a browser) would fetch or see: tags, attributes, text, the embedded data."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self.scripts: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in.append(dict(attrs).get("id") or tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] in ("items-data", "script"):
            self.scripts[self._in[-1]] = self.scripts.get(self._in[-1], "") + data
        else:
            self.text.append(data)


@pytest.fixture
def rehearsed(tmp_path: Path) -> Path:
    """A ledger with jobs/example.csv rehearsed twice (once as a canary)."""
    shutil.copy(REPO / "jobs" / "example.csv", tmp_path / "example.csv")
    ledger = tmp_path / "l.sqlite"
    command = [*BATCHVOID, "run", str(tmp_path / "example.csv"), "--simulate", "--ledger", str(ledger)]
    subprocess.run([*command, "--limit", "5"], capture_output=True, check=False)
    subprocess.run(command, capture_output=True, check=False)
    return ledger


def test_the_page_is_self_contained_and_says_what_the_ledger_says(tmp_path: Path, rehearsed: Path) -> None:
    """No fetch; the runs, the chart's bars, the failure reasons and every item match the ledger."""
    out = tmp_path / "report.html"
    result = subprocess.run(
        [*BATCHVOID, "report", "--ledger", str(rehearsed), "-o", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "17 items (all) of job 'example.csv' written to" in result.stderr
    page = Page()
    page.feed(out.read_text())
    page.close()
    for tag, attrs in page.tags:  # nothing to fetch: no external script, style, image, frame or font
        assert tag not in ("link", "img", "iframe", "object", "embed"), tag
        assert "src" not in attrs, (tag, attrs)
        assert not str(attrs.get("href", "")).startswith(("http", "//")), attrs
    assert "url(" not in out.read_text()
    text = " ".join(page.text)
    with open_ledger(rehearsed, readonly=True) as ledger:
        job_ = ledger.job("example.csv")
        assert job_ is not None
        runs = ledger.runs(job_)
        counts = ledger.counts(job_)
        reasons = ledger.failure_reasons(job_, 50)
        items = list(ledger.items(job_))
    assert len(runs) == 2
    for run in runs:
        assert run.run_id in text
        assert run.new.command in text
    bars = [attrs for tag, attrs in page.tags if tag == "rect" and attrs.get("height") != "12"]
    assert len(bars) == sum(1 for n in counts.values() if n)  # one bar segment per provider and state
    cells = [t.strip() for t in page.text if t.strip()]
    for provider, reason, n in reasons:  # a row of the reasons table: count, provider, reason
        at = cells.index(reason)
        assert cells[at - 2 : at] == [str(n), provider]
    assert len(reasons) == 4
    rows = json.loads(page.scripts["items-data"])
    assert sorted(row[1] for row in rows) == sorted(item["invoice_id"] for item in items)
    states = [row[2] for row in rows]
    assert states == sorted(states, key=lambda s: s not in ("failed", "pending", "in_flight"))  # failed first


def test_a_large_job_keeps_the_failed_items_and_says_how_many_are_left_out(
    tmp_path: Path, rehearsed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_ITEMS the table keeps the failed items first and points at the CSV report for the rest."""
    monkeypatch.setattr(htmlreport, "MAX_ITEMS", 6)
    out = tmp_path / "big.html"
    with open_ledger(rehearsed, readonly=True) as ledger, out.open("w") as f:
        job_ = ledger.job("example.csv")
        assert job_ is not None
        written = htmlreport.write_html(ledger, job_, None, f)
    assert written == 6
    page = Page()
    page.feed(out.read_text())
    rows = json.loads(page.scripts["items-data"])
    assert [row[2] for row in rows[:4]] == ["failed"] * 4
    assert "The first 6 of 17 items (failed and unfinished first)" in " ".join(page.text)


def test_html_is_picked_by_the_suffix_and_honours_state_and_run(tmp_path: Path, rehearsed: Path) -> None:
    """-o x.html writes HTML; --state failed keeps only failed rows in its table."""
    out = tmp_path / "failed.htm"
    subprocess.run(
        [*BATCHVOID, "report", "--ledger", str(rehearsed), "--state", "failed", "-o", str(out)], check=True
    )
    page = Page()
    page.feed(out.read_text())
    assert {row[2] for row in json.loads(page.scripts["items-data"])} == {"failed"}


def test_the_page_renders_in_a_headless_browser_without_script_errors(
    tmp_path: Path, rehearsed: Path
) -> None:
    """Headless Chromium draws it (a screenshot), its script runs (the pager is filled), no console error."""
    if shutil.which("chromium") is None:
        unavailable(
            here="no chromium here: .ci/chromium installs Debian's package",
            under_ci="no chromium under CI: .ci/run installs it with .ci/chromium",
        )
    out = tmp_path / "report.html"
    subprocess.run([*BATCHVOID, "report", "--ledger", str(rehearsed), "-o", str(out)], check=True)
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    dom = subprocess.run([*browser, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "page 1 of 1 (17 items)" in dom.stdout  # written by the script: it ran
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    shot = tmp_path / "shot.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1100,1400", out.as_uri()],
                   capture_output=True, timeout=60, check=True)  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a drawn page, not a blank one
