"""Part 4, resume: a ledger holding a large job with all but a few items done, run again.

The ledger is built in this process the way a first run would build it (`Ledger.ingest`
of the job file), then one UPDATE marks every item voided except `resume_left` of them,
spread evenly through the file. The run is timed from just before its process starts to
the first request the simulator sees (polled every 10 ms) and to its exit.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

from batchvoid import config as configuration
from batchvoid import jobfile
from batchvoid.ledger import NewJob, now, open_ledger
from bench import logscan, runs
from bench.configs import write_config
from bench.figures import Figure, Section
from bench.jobs import write_job
from bench.simulator import SimulatorProcess
from bench.workspace import Workspace, timeout_for

FIRST_REQUEST_TARGET_S = 3.0
PEAK_TARGET_MB = 150


def measure(ws: Workspace, sim: SimulatorProcess) -> Section:
    sizes = ws.sizes
    section = Section("resume")
    items, left = sizes.resume_items, sizes.resume_left
    job = write_job(ws.work / "resume.csv", items)
    config = write_config(ws.work / "resume.toml", sim.base_url, concurrency=sizes.concurrency)
    ledger = ws.work / "resume.sqlite"
    began = time.monotonic()
    build_ledger(job, config, ledger, left)
    ws.say(f"resume: built a ledger of {items} items, {left} left, in {time.monotonic() - began:.1f}s")

    sim.reset()
    first_request: list[float] = []

    def watch() -> bool:
        if not first_request and sim.stats()["totals"]["requests"]:
            first_request.append(time.time())
        return False

    done = runs.batchvoid(
        ws,
        sim,
        "resume",
        job=job,
        config=config,
        ledger=ledger,
        timeout_s=timeout_for(left, seconds=30),
        watch=watch,
        watch_every_s=0.01,
    )
    voided = sim.stats()["totals"]["voided"]
    if voided != left:
        section.notes.append(f"resume: voided {voided}, expected {left}")
    timeline = logscan.read(runs.log_file(ws, "resume"))
    first_logged = None if timeline.first_attempt is None else timeline.first_attempt - done.started
    to_first = first_request[0] - done.started if first_request else first_logged
    if not first_request:
        section.notes.append("resume: the simulator was never seen busy; first request from the log")
    ws.say(
        f"resume: first request after {to_first if to_first is None else round(to_first, 2)}s, "
        f"done in {done.wall_s:.2f}s, peak RSS {done.peak_rss_mb:.1f} MB"
    )
    section.details = {
        "items": items,
        "left": left,
        "voided": voided,
        "start_to_first_request_s": to_first,
        "start_to_first_logged_attempt_s": first_logged,  # logged when its answer came back
        "wall_s": done.wall_s,
        "cpu_s": done.cpu_s,
        "peak_rss_mb": done.peak_rss_mb,
    }
    section.figures = [
        Figure(
            "resume.first_request_s",
            f"4 resume {items} items, {left} left: start to first request",
            to_first,
            "s",
            at_most=FIRST_REQUEST_TARGET_S,
        ),
        Figure("resume.total_s", "4 resume: start to end of run", done.wall_s, "s"),
        Figure(
            "resume.peak_mb",
            f"4 resume: peak RSS, {items}-item ledger",
            done.peak_rss_mb,
            " MB",
            at_most=PEAK_TARGET_MB,
        ),
    ]
    return section


def build_ledger(job: Path, config_file: Path, ledger: Path, left: int) -> None:
    """Record `job` in a new ledger as `batchvoid run` would, then mark all but `left` items voided."""
    ledger.unlink(missing_ok=True)
    config = configuration.load(config_file)
    with open_ledger(ledger) as book:
        book.ingest(
            NewJob(
                job_id=job.name,
                job_file=str(job),
                job_sha256=jobfile.sha256(job),
                config_fingerprint=config.fingerprint(),
                rows=jobfile.read(job, config.profiles),
            )
        )
    with closing(sqlite3.connect(ledger)) as db, db:
        (items,) = db.execute("SELECT count(*) FROM items").fetchone()
        step = max(1, items // left)
        db.execute(
            "UPDATE items SET state = 'voided', attempts = 1, http_status = 200, updated_at = ?"
            " WHERE (id - 1) % ? != 0 OR id > ?",
            (now(), step, step * left),
        )
