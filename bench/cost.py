"""Part 5, ledger and log cost: CPU per void spent in the ledger's SQL and in log lines.

One more run of part 1's job under `bench.instrumented`, which counts the thread CPU time
inside the ledger's group commits and page reads and inside every log line's call. With
--profile (and pyinstrument installed), a further run is profiled and its top entries,
cumulative and self, are reported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench import runs
from bench.configs import write_config
from bench.figures import Figure, Section
from bench.jobs import write_job
from bench.process import BenchError, run
from bench.simulator import SimulatorProcess
from bench.workspace import Workspace, timeout_for

REPO = Path(__file__).resolve().parent.parent


def measure(ws: Workspace, sim: SimulatorProcess) -> Section:
    sizes = ws.sizes
    section = Section("cost")
    items = sizes.overhead_items
    job = write_job(ws.work / "cost.csv", items)
    config = write_config(ws.work / "cost.toml", sim.base_url, concurrency=sizes.concurrency)

    report, done, voided = _instrumented(ws, sim, "cost", job, config, items, profile=None)
    cpu = report["cpu_s"]
    ledger_s = cpu.get("ledger.apply", 0.0) + cpu.get("ledger.claim", 0.0)
    log_s = cpu.get("log", 0.0)
    per_void = 1e6 / max(voided, 1)
    ws.say(
        f"cost: {voided} voids, {done.cpu_s * per_void:.0f} us CPU per void, of which ledger SQL "
        f"{ledger_s * per_void:.0f} us, log lines {log_s * per_void:.0f} us"
    )
    section.details = {
        "voided": voided,
        "wall_s": done.wall_s,
        "process_cpu_s": done.cpu_s,
        "cpu_s": cpu,
        "calls": report["calls"],
        "voids_per_commit": voided / max(report["calls"].get("ledger.apply", 0), 1),
        "log_lines_per_void": report["calls"].get("log", 0) / max(voided, 1),
    }
    section.figures = [
        Figure(
            "cost.cpu_us_per_void", "5 batchvoid CPU per void (instrumented)", done.cpu_s * per_void, " us"
        ),
        Figure(
            "cost.ledger_us_per_void", "5 ledger SQL CPU per void (its threads)", ledger_s * per_void, " us"
        ),
        Figure("cost.log_us_per_void", "5 log lines CPU per void", log_s * per_void, " us"),
        Figure("cost.ledger_share", "5 ledger SQL share of CPU", 100 * ledger_s / done.cpu_s, "%"),
        Figure("cost.log_share", "5 log lines share of CPU", 100 * log_s / done.cpu_s, "%"),
    ]

    if ws.profile:
        if importlib.util.find_spec("pyinstrument") is None:
            section.notes.append("--profile: pyinstrument is not installed (pip install pyinstrument)")
        else:
            html = ws.work / "profile.html"
            profiled, done, voided = _instrumented(ws, sim, "cost-profiled", job, config, items, profile=html)
            section.details["profile"] = (profiled.get("profile") or {}) | {
                "html": str(html),
                "voided": voided,
                "wall_s": done.wall_s,
                "process_cpu_s": done.cpu_s,
            }
            ws.say(f"cost: profiled run done; pyinstrument's HTML is {html}")
    return section


def _instrumented(
    ws: Workspace,
    sim: SimulatorProcess,
    name: str,
    job: Path,
    config: Path,
    items: int,
    *,
    profile: Path | None,
) -> tuple[dict[str, Any], Any, int]:
    sim.reset()
    report = ws.work / f"{name}.json"
    args = [sys.executable, "-m", "bench.instrumented", "--report", str(report)]
    if profile is not None:
        args += ["--profile", str(profile)]
    args += [
        "--",
        "run",
        str(job),
        "--config",
        str(config),
        "--ledger",
        str(ws.work / f"{name}.sqlite"),
        "--log-file",
        str(runs.log_file(ws, name)),
    ]
    env = ws.env(sim)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = run(args, name=name, logs=ws.logs, env=env, timeout_s=timeout_for(items) * (3 if profile else 1))
    if done.returncode != 0:
        raise BenchError(f"{name}: instrumented batchvoid run exited with {done.returncode}:\n{done.tail()}")
    voided = sim.stats()["totals"]["voided"]
    return json.loads(report.read_text(encoding="utf-8")), done, voided
