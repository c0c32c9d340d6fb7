"""Operator commands through the real CLI: plan, progress, status, report, redrive, locks, providers."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from batchvoid.cli import main
from batchvoid.ledger.sqlite.lock import lock_path
from batchvoid.models import ItemState, RateLimit
from batchvoid.progress import Display, ProgressOptions, Tracker, progress_line
from batchvoid.report import report_columns

REPO = Path(__file__).resolve().parent.parent
PROVIDERS = ("chargeover", "rapyd", "campfire", "maple", "sellapp")
CONTROL = re.compile(r"[\x1b\r]")
FAST = """
[defaults]
max_attempts = 1
concurrency = 4
timeout_s = 120

[providers.chargeover]
type = "chargeover"
base_url = "http://127.0.0.1"
rate_limits = {chargeover}
[providers.rapyd]
type = "rapyd"
rate_limits = {rapyd}
[providers.campfire]
type = "campfire"
rate_limits = {campfire}
[providers.maple]
type = "maple"
company_id = "cmp_simulated"
rate_limits = []
[providers.sellapp]
type = "sellapp"
rate_limits = []
"""


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.endswith(("_KEY", "_TOKEN", "_USERNAME", "_PASSWORD")):
            monkeypatch.delenv(name)
    return CliRunner()


def fast_config(tmp_path: Path, chargeover: str = "[]", rapyd: str = "[]", campfire: str = "[]") -> str:
    """Every provider unlimited (unless given), one attempt per item: rehearsals in milliseconds."""
    path = tmp_path / "fast.toml"
    path.write_text(FAST.format(chargeover=chargeover, rapyd=rapyd, campfire=campfire))
    return str(path)


def example(tmp_path: Path) -> str:
    return str(shutil.copy(REPO / "jobs" / "example.csv", tmp_path / "example.csv"))


def write_job(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text("provider,invoice_id,note\n" + "".join(f"{p},{i},n-{i}\n" for p, i in rows))
    return str(path)


def ledger_states(ledger: Path) -> Counter[str]:
    with sqlite3.connect(ledger) as db:
        return Counter(dict(db.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall()))


# -- plan ---------------------------------------------------------------------------------


def test_plan_checks_a_new_job_and_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    """`plan` and `run --dry-run` print items per provider, exit 0, and create no ledger."""
    for args in (
        ["plan", example(tmp_path), "--simulate"],
        ["run", example(tmp_path), "--simulate", "--dry-run"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "(new: the run records it). Nothing was sent." in result.stdout
        assert re.search(r"│ rapyd +│ +4 │ +0 │ +0 │ +4 │ 200/60s, 1000/300s │ +1.2s │", result.stdout)
        assert "Runnable" in result.stdout
    assert not (tmp_path / "rehearsal.sqlite").exists()
    assert not list(tmp_path.glob("*.log"))


def test_plan_estimates_each_lane_at_its_tightest_window(runner: CliRunner, tmp_path: Path) -> None:
    """A lane's estimate is its items over min(count/period) of the windows they fill; the slowest lane sets the total."""
    config = fast_config(
        tmp_path, chargeover='["10/1s", "30/60s"]', rapyd='["100/1s"]', campfire='["10/1s", "5000/24h"]'
    )
    rows = [("chargeover", f"c{n}") for n in range(40)] + [("rapyd", f"r{n}") for n in range(20)]
    rows += [("maple", "m1"), ("chargeover", "c3")]  # one duplicate row
    rows += [("campfire", str(n)) for n in range(30)]  # 30 fill no day of 5,000: 10/s
    result = runner.invoke(
        main, ["plan", write_job(tmp_path / "j.csv", rows), "--config", config, "--simulate"]
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"│ chargeover +│ +40 │ +1 │ +0 │ +40 │ 10/1s, 30/60s +│ +1:20 │", result.stdout)
    assert re.search(r"│ campfire +│ +30 │ +0 │ +0 │ +30 │ 10/1s, 5000/24h +│ +3.0s │", result.stdout)
    assert re.search(r"│ maple +│ +1 │ +0 │ +0 │ +1 │ no limit +│ no limit │", result.stdout)
    assert re.search(r"│ total +│ +91 │ +1 │ +0 │ +91 │ +│ +1:20 │", result.stdout)
    assert "Estimated time: 1:20, set by chargeover (40 items at 0.5/s)" in result.stdout


def test_plan_counts_what_the_ledger_has_finished(runner: CliRunner, tmp_path: Path) -> None:
    """For a job in the ledger, plan shows finished items and, with --retry-failed, the failed ones to send."""
    job_file, config = example(tmp_path), fast_config(tmp_path)
    assert runner.invoke(main, ["run", job_file, "--simulate", "--config", config]).exit_code == 1
    before = (tmp_path / "rehearsal.sqlite").stat().st_mtime_ns
    plain = runner.invoke(main, ["plan", job_file, "--simulate", "--config", config])
    assert plain.exit_code == 0, plain.output
    assert "(in the ledger: the run resumes it)" in plain.stdout
    assert re.search(r"│ total +│ +17 │ +0 │ +17 │ +0 │", plain.stdout)
    assert "Nothing to send: every item is finished." in plain.stdout
    redrive = runner.invoke(main, ["plan", job_file, "--simulate", "--config", config, "--retry-failed"])
    assert re.search(r"│ total +│ +17 │ +0 │ +13 │ +4 │", redrive.stdout)
    assert ledger_states(tmp_path / "rehearsal.sqlite")["failed"] == 4
    assert (tmp_path / "rehearsal.sqlite").stat().st_mtime_ns == before


def test_plan_names_every_missing_credential_and_prints_no_secret(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing credential variables are each named with exit 2; a set one's value never appears."""
    monkeypatch.setenv("RAPYD_ACCESS_KEY", "rak-very-secret")
    config = str(REPO / "config" / "providers.example.toml")
    result = runner.invoke(main, ["plan", example(tmp_path), "--config", config])
    assert result.exit_code == 2
    assert "cannot run: " in result.stderr
    assert "[providers.rapyd] needs environment variable RAPYD_SECRET_KEY" in result.stderr
    for var in ("CHARGEOVER_USERNAME", "CAMPFIRE_API_KEY", "MAPLE_API_TOKEN", "SELLAPP_API_KEY"):
        assert var in result.stderr
    assert "RAPYD_ACCESS_KEY" not in result.output
    assert "rak-very-secret" not in result.output


def test_plan_prints_the_plan_on_stdout_and_its_refusals_on_stderr(runner: CliRunner, tmp_path: Path) -> None:
    """stdout has the plan table and the verdict, never a 'cannot run' line; stderr has each refusal."""
    config = str(REPO / "config" / "providers.example.toml")
    result = runner.invoke(main, ["plan", example(tmp_path), "--config", config])
    assert result.exit_code == 2
    assert "Plan for job 'example.csv'" in result.stdout
    assert "Not runnable: 5 problems (listed on stderr)." in result.stdout
    assert "cannot run" not in result.stdout
    assert result.stderr.count("cannot run: ") == 5
    assert "Plan for job" not in result.stderr


@pytest.mark.parametrize("case", ["bad row", "changed file"])
def test_plan_refuses_what_run_would_refuse(runner: CliRunner, tmp_path: Path, case: str) -> None:
    """A bad row (with its line) or a job file changed since the job began is exit 2, nothing written."""
    path = tmp_path / "j.csv"
    write_job(path, [("rapyd", "a"), ("maple", "b")])
    if case == "changed file":
        assert (
            runner.invoke(main, ["run", str(path), "--simulate", "--config", fast_config(tmp_path)]).exit_code
            == 0
        )
        write_job(path, [("rapyd", "a"), ("maple", "b"), ("maple", "c")])
        message = "has changed since job 'j.csv' began"
    else:
        path.write_text("provider,invoice_id\nrapyd,a\nrapid,b\n")
        message = "j.csv line 3: unknown provider 'rapid'"
    result = runner.invoke(main, ["plan", str(path), "--simulate"])
    assert result.exit_code == 2
    assert message in result.stderr
    if case == "bad row":
        assert not (tmp_path / "rehearsal.sqlite").exists()


# -- progress and the summary --------------------------------------------------------------


def test_progress_off_a_terminal_is_plain_lines(runner: CliRunner, tmp_path: Path) -> None:
    """With stderr not a terminal, progress is a plain line at the interval, with no control characters."""
    rows = [(p, f"i{n}") for n in range(12) for p in PROVIDERS]
    args = ["run", write_job(tmp_path / "j.csv", rows), "--simulate", "--config", fast_config(tmp_path)]
    args += ["--fault", "latency_ms=25", "--progress-interval", "0.02"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if " progress " in line]
    assert len(lines) >= 2
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ progress \d+/60 done \(\d+%\), [\d.]+/s, ETA \S+, 0 failed"
        r"( \| [a-z]+ \d+/12( \w+)?){0,2}( \| \d more)?",
        lines[-1],
    )
    assert all(len(line) <= 120 for line in lines)  # five lanes, and still a short line
    assert not CONTROL.search(result.stderr)
    assert not CONTROL.search(result.stdout)


def test_quiet_shows_the_start_and_end_lines_and_the_summary(runner: CliRunner, tmp_path: Path) -> None:
    """--quiet prints no progress and no item's line: on stderr only the start and end with times and the exit status."""
    args = ["run", example(tmp_path), "--simulate", "--config", fast_config(tmp_path), "--quiet"]
    result = runner.invoke(main, [*args, "--progress-interval", "0.01", "--fault", "latency_ms=20"])
    assert result.exit_code == 1
    start, end = result.stderr.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
    assert re.match(rf"{stamp} \[info +\] run\.started .* items=17 ", start)
    assert re.match(rf"{stamp} \[info +\] run\.finished .* exit_status=1 ", end)
    assert "17 items recorded" in result.stdout
    assert "void.failed" in (tmp_path / "example.csv.log").read_text()


def test_summary_says_what_to_do_next(runner: CliRunner, tmp_path: Path) -> None:
    """A stopped lane and failed items end with the next commands: fix and rerun, report, --retry-failed."""
    args = ["run", example(tmp_path), "--simulate", "--config", fast_config(tmp_path)]
    result = runner.invoke(main, [*args, "--fault", "maple:revoke_after=0", "--ledger", "month.sqlite"])
    assert result.exit_code == 3
    out = result.stdout
    assert re.search(
        r"\d+ items finished in [\d.]+s \([\d.]+/s\), \d+ requests\. Log: example\.csv\.log", out
    )
    assert "stopped maple: the provider refused the credentials" in out
    assert "3 items are left: fix what stopped it (above), then run the same command again" in out
    assert "batchvoid report --ledger month.sqlite --state failed -o failed.csv" in out
    assert "the same command with --retry-failed" in out


class FakeLane:
    def __init__(self) -> None:
        self.outcomes: Counter[ItemState] = Counter()
        self.stopped: str | None = None
        self.throttled_until = 0.0
        self.rate_limits: tuple[RateLimit, ...] = ()


@dataclass
class FakeEngine:
    lanes: dict[str, FakeLane] = field(default_factory=dict)
    halted: str | None = None


@pytest.mark.anyio
async def test_live_display_renders_bars_with_lane_states() -> None:
    """On a terminal: one bar per provider with done/total, failures, 'throttled' and 'stopped'; logs above."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    display = Display(ProgressOptions("bars", refresh_s=0.005), buffer, console=console)
    counts = {
        ("rapyd", ItemState.PENDING): 4,
        ("maple", ItemState.PENDING): 3,
        ("maple", ItemState.VOIDED): 1,
    }
    engine = FakeEngine()
    async with display.watching(engine, counts):
        engine.lanes = {"rapyd": FakeLane(), "maple": FakeLane()}
        engine.lanes["rapyd"].outcomes.update({ItemState.VOIDED: 2, ItemState.FAILED: 1})
        engine.lanes["rapyd"].throttled_until = time.monotonic() + 60
        engine.lanes["maple"].stopped = "maple: the provider refused the credentials"
        assert display.log_stream is not None
        print("2026-01-01 [warning] lane.stopped provider=maple", file=display.log_stream)
        await anyio.sleep(0.03)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    assert "\x1b[" in buffer.getvalue()  # it did draw as on a terminal
    assert re.search(r"rapyd +\S+ +3/4 .* 1 failed +throttled", text)
    assert re.search(r"maple +\S+ +1/4 .* 0 failed +stopped", text)
    assert re.search(r"total +\S+ +4/8 ", text)
    assert "lane.stopped provider=maple" in text


def test_tracker_rate_and_eta_follow_a_moving_clock() -> None:
    """Rate is items finished over the window; ETA is what is left at that rate; the job waits for its slowest lane."""
    now = [100.0]
    tracker = Tracker({("a", ItemState.PENDING): 100, ("b", ItemState.PENDING): 10}, clock=lambda: now[0])
    engine = FakeEngine({"a": FakeLane(), "b": FakeLane()})
    now[0] += 10
    engine.lanes["a"].outcomes[ItemState.VOIDED] = 50
    engine.lanes["b"].outcomes[ItemState.VOIDED] = 5
    a, b = tracker.poll(engine)
    assert (a.rate, a.eta_s, b.rate, b.eta_s) == (5.0, 10.0, 0.5, 10.0)
    engine.lanes["b"].stopped = "b: refused"
    line = progress_line(tracker.poll(engine), 1_796_000_000.9)
    assert (
        line
        == "2026-11-30T00:53:20Z progress 55/110 done (50%), 5.5/s, ETA 0:10, 0 failed | b 5/10 stopped | a 50/100"
    )


# -- status --------------------------------------------------------------------------------


def test_status_lists_jobs_and_shows_one_in_detail(runner: CliRunner, tmp_path: Path) -> None:
    """status lists jobs; --job-id shows counts, runs, attempts, top failure reasons; --json has the same."""
    args = ["run", example(tmp_path), "--simulate", "--config", fast_config(tmp_path)]
    assert runner.invoke(main, args).exit_code == 1
    listing = runner.invoke(main, ["status", "--ledger", "rehearsal.sqlite"])
    assert listing.exit_code == 0, listing.output
    assert re.search(r"│ example\.csv │ +17 │ +13 │ +4 │ +0 │ +1 │ \d{4}-\d\d-\d\d ", listing.stdout)

    detail = runner.invoke(main, ["status", "--ledger", "rehearsal.sqlite", "--job-id", "example.csv"])
    assert detail.exit_code == 0
    assert "17 items, 0 duplicate rows, 18 requests" in detail.stdout  # one a status lookup
    assert "Job 'example.csv' from " in detail.stdout
    assert "(a rehearsal on the simulator)" in detail.stdout
    assert "│ total      │     10 │            3 │      4 │    17 │" in detail.stdout
    assert "1  chargeover: HTTP 400: Cannot void a paid invoice." in detail.stdout

    data = json.loads(
        runner.invoke(
            main, ["status", "--ledger", "rehearsal.sqlite", "--job-id", "example.csv", "--json"]
        ).stdout
    )
    assert data["totals"] == {
        "pending": 0,
        "in_flight": 0,
        "voided": 10,
        "already_void": 3,
        "failed": 4,
    }
    assert data["counts"]["rapyd"] == {"voided": 2, "already_void": 1, "failed": 1}
    assert (data["runs"], data["attempts"], data["running"], data["simulated"]) == (1, 18, None, True)
    assert data["started_at"] <= data["finished_at"]
    assert {r["provider"] for r in data["failure_reasons"]} == {"chargeover", "rapyd", "maple", "sellapp"}
    jobs = json.loads(runner.invoke(main, ["status", "--ledger", "rehearsal.sqlite", "--json"]).stdout)[
        "jobs"
    ]
    assert [(j["job_id"], j["totals"]["failed"]) for j in jobs] == [("example.csv", 4)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--ledger", "none.sqlite"], "none.sqlite: no such ledger"),
        (
            ["status", "--ledger", "rehearsal.sqlite", "--job-id", "nope"],
            "no job 'nope' (jobs: 'example.csv')",
        ),
        (["report", "--ledger", "rehearsal.sqlite", "--job-id", "nope"], "no job 'nope'"),
    ],
)
def test_status_and_report_errors_are_exit_2(
    runner: CliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    """An unknown ledger or job is exit 2 with a message; no ledger file is created."""
    if "none.sqlite" not in args:
        assert (
            runner.invoke(
                main, ["run", example(tmp_path), "--simulate", "--config", fast_config(tmp_path)]
            ).exit_code
            == 1
        )
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "none.sqlite").exists()


# -- report and redrive --------------------------------------------------------------------


def test_report_in_both_formats(runner: CliRunner, tmp_path: Path) -> None:
    """CSV: one row per item with outcome and metadata (a clashing `reason` becomes meta.reason); JSONL too."""
    assert (
        runner.invoke(
            main, ["run", example(tmp_path), "--simulate", "--config", fast_config(tmp_path)]
        ).exit_code
        == 1
    )
    result = runner.invoke(main, ["report", "--ledger", "rehearsal.sqlite", "--state", "failed"])
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["invoice_id"] for r in rows] == [
        "paid_10234",
        "missing_invoice_9f8e7d",
        "paid_6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
        "missing_884203",
    ]
    first = rows[0]
    assert first["state"] == "failed"
    assert first["reason"] == "HTTP 400: Cannot void a paid invoice."
    assert (first["http_status"], first["attempts"], first["line"]) == ("400", "1", "5")
    assert first["idempotency_key"].startswith("bv1-")
    assert (first["customer"], first["meta.reason"]) == ("Initech", "customer already paid")
    assert first["created_at"] <= first["updated_at"]

    out = runner.invoke(
        main,
        [
            "report",
            "--ledger",
            "rehearsal.sqlite",
            "--state",
            "voided",
            "--state",
            "already_void",
            "-o",
            "done.jsonl",
        ],
    )
    assert out.exit_code == 0
    assert "13 items (voided+already_void) of job 'example.csv' written to done.jsonl" in out.stderr
    records = [json.loads(line) for line in (tmp_path / "done.jsonl").read_text().splitlines()]
    assert len(records) == 13
    assert {r["state"] for r in records} == {"voided", "already_void"}
    assert records[0]["metadata"] == {"customer": "Acme Corp", "reason": "duplicate invoice"}
    assert (
        len(
            runner.invoke(
                main, ["report", "--ledger", "rehearsal.sqlite", "--format", "jsonl"]
            ).stdout.splitlines()
        )
        == 17
    )


def test_failed_report_is_a_job_file_that_voids_what_is_now_voidable(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Items failed by a bad spell (5xx) plus paid ones: their CSV report, run as a job, voids the first and fails the rest."""
    rows = [("chargeover", f"c{n}") for n in range(3)] + [("chargeover", "paid_1"), ("rapyd", "r1")]
    config = fast_config(tmp_path)
    first = runner.invoke(
        main,
        [
            "run",
            write_job(tmp_path / "j.csv", rows),
            "--simulate",
            "--config",
            config,
            "--fault",
            "chargeover:error_rate=1",
        ],
    )
    assert first.exit_code == 1
    assert (
        runner.invoke(
            main, ["report", "--ledger", "rehearsal.sqlite", "--state", "failed", "-o", "failed.csv"]
        ).exit_code
        == 0
    )

    again = runner.invoke(main, ["run", "failed.csv", "--simulate", "--config", config])
    assert again.exit_code == 1, again.output
    assert "4 items recorded from failed.csv" in again.stdout
    report = list(
        csv.DictReader(
            io.StringIO(
                runner.invoke(
                    main, ["report", "--ledger", "rehearsal.sqlite", "--job-id", "failed.csv"]
                ).stdout
            )
        )
    )
    assert {r["invoice_id"]: r["state"] for r in report} == {
        "c0": "voided",
        "c1": "voided",
        "c2": "voided",
        "paid_1": "failed",
    }
    # The first report's columns came along as metadata; the second report is still a valid job file.
    assert report[0]["note"] == "n-c0"
    assert report[0]["meta.state"] == "failed"
    (tmp_path / "again.csv").write_text(
        runner.invoke(main, ["report", "--ledger", "rehearsal.sqlite", "--job-id", "failed.csv"]).stdout
    )
    assert runner.invoke(main, ["plan", "again.csv", "--simulate", "--config", config]).exit_code == 0


class _Matches(str):
    """Equal to any string its pattern matches in full."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(self, other) is not None

    __hash__ = str.__hash__


ANY_5XX = _Matches(r"failed 5\d\d 1")  # the simulator's 5xx answers vary: 500, 502, 503


def test_retry_failed_resends_with_the_same_keys_and_keeps_history(runner: CliRunner, tmp_path: Path) -> None:
    """--retry-failed puts failed items back to pending, resends them with their keys, leaves voided ones alone."""
    rows = [("maple", f"m{n}") for n in range(3)] + [("sellapp", "s1")]
    config = fast_config(tmp_path)
    args = ["run", write_job(tmp_path / "j.csv", rows), "--simulate", "--config", config]
    assert runner.invoke(main, [*args, "--fault", "maple:error_rate=1"]).exit_code == 1
    with sqlite3.connect(tmp_path / "rehearsal.sqlite") as db:
        keys = dict(db.execute("SELECT invoice_id, idempotency_key FROM items").fetchall())

    result = runner.invoke(main, [*args, "--retry-failed"])
    assert result.exit_code == 0, result.output
    assert "job.redriven" in result.stderr
    with sqlite3.connect(tmp_path / "rehearsal.sqlite") as db:
        assert dict(db.execute("SELECT invoice_id, idempotency_key FROM items").fetchall()) == keys
        history = db.execute(
            "SELECT invoice_id, group_concat(outcome || ' ' || attempts.http_status || ' ' || attempt) FROM attempts"
            " JOIN items ON items.id = attempts.item GROUP BY invoice_id"
        ).fetchall()
        last = db.execute("SELECT invoice_id, state, http_status, attempts FROM items").fetchall()
    # The failed run's last answers moved into the history; each item row holds its latest.
    assert sorted(history) == [("m0", ANY_5XX), ("m1", ANY_5XX), ("m2", ANY_5XX)]
    assert sorted(last) == [
        ("m0", "voided", 200, 2),
        ("m1", "voided", 200, 2),
        ("m2", "voided", 200, 2),
        ("s1", "voided", 200, 1),
    ]
    assert ledger_states(tmp_path / "rehearsal.sqlite") == {"voided": 4}
    log = [json.loads(line) for line in (tmp_path / "j.csv.log").read_text().splitlines()]
    assert [e["by_provider"] for e in log if e["event"] == "job.redriven"] == [{"maple": 3}]


@given(st.lists(st.text(max_size=6), max_size=8, unique=True))
def test_report_columns_stay_a_valid_job_file_header(keys: list[str]) -> None:
    """Whatever the metadata keys, report column names are non-empty and unique as a job file reads them."""
    names = [name for name, _ in report_columns(keys)]
    normal = [name.strip().lower() for name in names]
    assert all(normal)
    assert len(set(normal)) == len(normal)
    assert [key for _, key in report_columns(keys) if key is not None] == keys


# -- cron safety: the run lock ----------------------------------------------------------------


def start_hanging_run(tmp_path: Path, config: str, job_file: str) -> subprocess.Popen[bytes]:
    """A real `batchvoid run` whose requests hang at the simulator, once it holds the job's lock."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchvoid",
            "run",
            job_file,
            "--simulate",
            "--config",
            config,
            "--fault",
            "latency_ms=60000",
            "--quiet",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        holder = None
        if (tmp_path / "rehearsal.sqlite").exists():
            with sqlite3.connect(f"file:{tmp_path / 'rehearsal.sqlite'}?mode=ro", uri=True) as db:
                try:
                    holder = db.execute("SELECT pid FROM locks").fetchone()
                except sqlite3.OperationalError:
                    holder = None
            db.close()
        if holder == (proc.pid,):
            return proc
        assert proc.poll() is None, "the first run ended before it held the lock"
        assert time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_second_run_of_the_same_job_exits_4_naming_the_first(tmp_path: Path) -> None:
    """Two runs of one job on one ledger: the second exits 4 at once naming the first's pid and host; it sends nothing."""
    config = fast_config(tmp_path)
    job_file = write_job(tmp_path / "j.csv", [(p, "x") for p in PROVIDERS])
    first = start_hanging_run(tmp_path, config, job_file)
    try:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "batchvoid",
                "run",
                job_file,
                "--simulate",
                "--config",
                config,
                "--log-file",
                "second.log",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 4, second.stderr
        assert f"is being run right now by pid {first.pid} on host " in second.stderr
        assert "Nothing was sent" in second.stderr
        assert not (tmp_path / "second.log").exists()  # it never got as far as the log it sends under
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    """After kill -9 of a run mid-job, the next run warns, takes the job over and finishes it."""
    config = fast_config(tmp_path)
    job_file = write_job(tmp_path / "j.csv", [(p, f"x{n}") for n in range(3) for p in PROVIDERS])
    first = start_hanging_run(tmp_path, config, job_file)
    first.kill()
    first.wait()
    assert lock_path(tmp_path / "rehearsal.sqlite", "j.csv").exists()

    result = subprocess.run(
        [sys.executable, "-m", "batchvoid", "run", job_file, "--simulate", "--config", config],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"was left locked by pid {first.pid} on host " in result.stderr
    assert "which is no longer running: taking the job over" in result.stderr
    assert ledger_states(tmp_path / "rehearsal.sqlite") == {"voided": 15}
    assert not lock_path(tmp_path / "rehearsal.sqlite", "j.csv").exists()
    with sqlite3.connect(tmp_path / "rehearsal.sqlite") as db:
        assert db.execute("SELECT count(*) FROM locks").fetchone() == (0,)


# -- providers and help ----------------------------------------------------------------------


def test_providers_lists_types_keys_credentials_and_limits(runner: CliRunner) -> None:
    """`providers` names every type with its credential variables and documented limits; --json too."""
    text = runner.invoke(main, ["providers"])
    assert text.exit_code == 0
    for needle in (
        "rapyd: Rapyd",
        "access_key_env (default RAPYD_ACCESS_KEY)",
        "documented   200/60s, 1000/300s",
        "company_id: the account's company id",
        "idempotency  Idempotency-Key header",
        "base_url     required: every account has its own",
        "max_attempts",
        "oauth        refresh_token_file (required): ",
        "token_url (default https://identity.xero.com/connect/token)",
    ):
        assert needle in text.stdout
    data = json.loads(runner.invoke(main, ["providers", "--json"]).stdout)
    assert [p["type"] for p in data["providers"]] == [
        "chargeover",
        "rapyd",
        "campfire",
        "maple",
        "sellapp",
        "stripe",
        "recurly",
        "maxio",
        "chargebee",
        "lago",
        "xero",
        "quickbooks",
    ]
    assert data["providers"][1]["credentials"] == {
        "access_key_env": "RAPYD_ACCESS_KEY",
        "secret_key_env": "RAPYD_SECRET_KEY",
    }


@pytest.mark.parametrize(
    "command", [[], ["run"], ["plan"], ["status"], ["report"], ["providers"], ["simulate"]]
)
def test_every_help_is_complete_with_an_example(runner: CliRunner, command: list[str]) -> None:
    """`batchvoid --help` and each sub-command's help exit 0 and show an example."""
    result = runner.invoke(main, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0
    assert re.search(r"^ +batchvoid [a-z]+ ", result.stdout, re.MULTILINE)
