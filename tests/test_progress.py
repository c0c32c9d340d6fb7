"""What progress tells about pauses: an ETA that counts them, and --quiet's console of run warnings."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from batchvoid.config import parse_rate_limit
from batchvoid.consolelog import ConsoleLog
from batchvoid.logs import open_log
from batchvoid.models import ItemState, RateLimit
from batchvoid.plan import LanePlan
from batchvoid.progress import Display, ProgressOptions, Tracker, progress_line


@dataclass
class Lane:
    rate_limits: Sequence[RateLimit] = ()
    outcomes: Counter[ItemState] = field(default_factory=Counter)
    stopped: str | None = None
    throttled_until: float = 0.0


@dataclass
class Engine:
    lanes: dict[str, Lane]
    halted: str | None = None


def test_eta_counts_what_is_left_of_a_pause() -> None:
    """A lane paused for an hour is an hour and its items away, by its windows while paused; the job waits for it."""
    now = [1000.0]
    tracker = Tracker({("a", ItemState.PENDING): 100, ("b", ItemState.PENDING): 100}, clock=lambda: now[0])
    engine = Engine({"a": Lane([parse_rate_limit("5/1s")]), "b": Lane()})
    now[0] += 10
    engine.lanes["a"].outcomes[ItemState.VOIDED] = 50
    engine.lanes["b"].outcomes[ItemState.VOIDED] = 50
    engine.lanes["a"].throttled_until = now[0] + 3600
    a, b = tracker.poll(engine)
    assert (a.state, a.eta_s, b.eta_s) == ("throttled", 3600 + 50 / 5, 10.0)
    line = progress_line([a, b], 1_796_000_000)
    assert line.startswith("2026-11-30T00:53:20Z progress 100/200 done (50%), 10.0/s, ETA 1:00:10, 0 failed")
    now[0] += 1800  # half the pause later, with nothing finished in the rate window
    a, b = tracker.poll(engine)
    assert (a.rate, a.eta_s) == (0.0, 1800 + 50 / 5)
    engine.lanes["b"].throttled_until = now[0] + 60  # no windows: the recent rate it is
    engine.lanes["b"].outcomes[ItemState.VOIDED] = 60
    _, b = tracker.poll(engine)
    assert b.eta_s == 60 + 40 / (10 / 1800)


def test_eta_is_never_faster_than_the_windows_allow() -> None:
    """A lane going faster than its windows allow for long (a burst) is given the plan's estimate for what is left."""
    now = [0.0]
    limits = [parse_rate_limit("200/60s"), parse_rate_limit("1000/300s")]
    tracker = Tracker({("rapyd", ItemState.PENDING): 1200}, clock=lambda: now[0])
    engine = Engine({"rapyd": Lane(limits)})
    now[0] += 4
    engine.lanes["rapyd"].outcomes[ItemState.VOIDED] = 200  # the first window's burst: 50/s
    (row,) = tracker.poll(engine)
    plan = LanePlan("rapyd", items=1200, duplicates=0, finished=200, rate_limits=tuple(limits))
    assert row.rate == 50.0
    assert row.eta_s == plan.duration_s == 300.0


def boom() -> None:
    raise ValueError("boom")


def test_quiet_console_gets_the_start_the_end_and_the_runs_warnings_and_errors_only(tmp_path: Path) -> None:
    """Under --quiet the console shows the start, a long pause, a halt, a stop and the end, one line each; item events and tracebacks go to the file."""
    stream = io.StringIO()
    with open_log(
        tmp_path / "run.log", console=stream, console_log=ConsoleLog(quiet=True), job_id="j"
    ) as log:
        log.info("run.started", items=3)
        log.warning("void.failed", provider="rapyd", invoice_id="paid_1", reason="HTTP 400: paid")
        log.warning("lane.paused", provider="rapyd", pause_s=3600, until="2026-11-21T14:43:55Z")
        log.warning("run.halting", reason="interrupted by SIGTERM")
        try:
            boom()
        except ValueError:
            log.exception("lane.stopped", provider="maple", reason="maple: unexpected error")
        log.info("void.succeeded", provider="rapyd", invoice_id="a")
        log.info("job.resumed")
        log.info("run.finished", exit_status=3)
    lines = stream.getvalue().splitlines()
    assert [line.split("] ")[1].split()[0] for line in lines] == [
        "run.started",
        "lane.paused",
        "run.halting",
        "lane.stopped",
        "run.finished",
    ]
    assert "until=2026-11-21T14:43:55Z" in lines[1]
    assert lines[-1].endswith("exit_status=3")
    assert "Traceback" not in stream.getvalue()
    logged = [json.loads(line) for line in (tmp_path / "run.log").read_text().splitlines()]
    assert [e["event"] for e in logged] == [
        "run.started",
        "void.failed",
        "lane.paused",
        "run.halting",
        "lane.stopped",
        "void.succeeded",
        "job.resumed",
        "run.finished",
    ]
    assert logged[4]["exception"].startswith("Traceback (most recent call last):")
    assert logged[4]["exception"].endswith("ValueError: boom")


@pytest.mark.anyio
async def test_the_lines_show_the_whole_jobs_totals_when_other_workers_share_it() -> None:
    """This run did 5 of 100 items, the ledger says 60 are done by all workers: the line says both."""
    out = io.StringIO()
    display = Display(ProgressOptions("plain", interval_s=0.01), out)
    engine = Engine({"a": Lane()})
    shared = {("a", ItemState.VOIDED): 60, ("a", ItemState.PENDING): 40}
    async with display.watching(engine, {("a", ItemState.PENDING): 100}, lambda: shared):
        engine.lanes["a"].outcomes[ItemState.VOIDED] = 5
        with anyio.fail_after(5):
            while "all workers" not in out.getvalue():
                await anyio.sleep(0.01)
    line = next(line for line in out.getvalue().splitlines() if "all workers" in line)
    assert "5/100 done" in line
    assert line.endswith("all workers: 60/100 done (60%)")
