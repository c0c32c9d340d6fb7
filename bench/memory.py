"""Part 3, memory: peak RSS of `batchvoid run` over a large job file against a job a tenth its size.

A run over the whole large job does not fit the time budget (it is as slow as its voids),
so the large run is stopped once it has voided as many items as the small job has: both
runs then did the same work, and the large one also checked and recorded ten times the
rows. The small run goes to its end. Peak RSS is the child's own `ru_maxrss` from `wait4`.
Part 4 (resume) covers the end of a run whose ledger holds the whole large job.
"""

from __future__ import annotations

import time

from bench import runs
from bench.configs import write_config
from bench.figures import Figure, Section
from bench.jobs import write_job
from bench.simulator import SimulatorProcess
from bench.workspace import Workspace, timeout_for

RATIO_TARGET = 1.2
PEAK_TARGET_MB = 150
INGEST_TARGET_S = 6.0  # issue 9 part 5: check and record a new 1M-row job, then send
INGEST_RATE = 20_000  # rows/s below which ingest is presumed stuck: it sizes the timeout


def measure(ws: Workspace, sim: SimulatorProcess) -> Section:
    sizes = ws.sizes
    section = Section("memory")
    small_n, large_n = sizes.memory_small, sizes.memory_large
    small_job = write_job(ws.work / "memory-small.csv", small_n)
    large_job = write_job(ws.work / "memory-large.csv", large_n)
    config = write_config(ws.work / "memory.toml", sim.base_url, concurrency=sizes.concurrency)

    sim.reset()
    small = runs.batchvoid(
        ws, sim, "memory-small", job=small_job, config=config, timeout_s=timeout_for(small_n)
    )
    small_voided = sim.stats()["totals"]["voided"]
    ws.say(f"memory: {small_n}-row job, {small_voided} voids, peak RSS {small.peak_rss_mb:.1f} MB")

    sim.reset()
    first_request: list[float] = []

    def enough() -> bool:
        totals = sim.stats()["totals"]
        if not first_request and totals["requests"]:
            first_request.append(time.time())
        return bool(totals["voided"] >= small_n)

    large = runs.batchvoid(
        ws,
        sim,
        "memory-large",
        job=large_job,
        config=config,
        timeout_s=timeout_for(small_n, seconds=large_n / INGEST_RATE),
        watch=enough,
        watch_every_s=0.25,
    )
    large_voided = sim.stats()["totals"]["voided"]
    ingest_s = first_request[0] - large.started if first_request else None
    ws.say(
        f"memory: {large_n}-row job, stopped={large.stopped} after {large_voided} voids, "
        f"peak RSS {large.peak_rss_mb:.1f} MB"
    )
    if not large.stopped:
        section.notes.append(f"the {large_n}-row run finished before it could be stopped")
    section.details = {
        "small": {
            "rows": small_n,
            "voided": small_voided,
            "wall_s": round(small.wall_s, 2),
            "peak_rss_mb": round(small.peak_rss_mb, 1),
        },
        "large": {
            "rows": large_n,
            "voided_when_stopped": large_voided,
            "stopped": large.stopped,
            "exit_status": large.returncode,
            "wall_s": round(large.wall_s, 2),
            "peak_rss_mb": round(large.peak_rss_mb, 1),
            "start_to_first_request_s": None if ingest_s is None else round(ingest_s, 2),
        },
        "measured": f"peak RSS of the {large_n}-row run stopped after {small_n} voids, "
        f"over the peak of the whole {small_n}-row run",
    }
    section.figures = [
        Figure(
            "memory.ratio",
            f"3 peak RSS: {large_n} rows / {small_n} rows",
            large.peak_rss_mb / small.peak_rss_mb,
            at_most=RATIO_TARGET,
        ),
        Figure(
            "memory.large_peak_mb",
            f"3 peak RSS, {large_n}-row job",
            large.peak_rss_mb,
            " MB",
            at_most=PEAK_TARGET_MB,
        ),
        Figure("memory.small_peak_mb", f"3 peak RSS, {small_n}-row job", small.peak_rss_mb, " MB"),
        Figure(
            "memory.large_start_to_first_request_s",
            f"3 ingest: new {large_n}-row job, start to first request",
            ingest_s,
            "s",
            at_most=INGEST_TARGET_S,
        ),
    ]
    return section
