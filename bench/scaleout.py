"""Part 6, scale-out: 1, 2 and 4 `batchvoid run` workers share one job on one PostgreSQL ledger.

The simulator answers after `scale_latency_ms`, so each worker is bound by its own concurrency,
not by this machine's cores. Throughput is the job's voids (all workers' logs merged) per
second, over the span in which all N were voiding (so that their start-up, a second or so
apart on a loaded machine, and the job's tail do not count); N workers get N times the items.
Efficiency at N is that / (N x one worker's). Then 4 workers run against a limit set below
their total capacity, enforced by the simulator (a sliding window: a 429 for any request
over it) and configured alike in batchvoid: achieved / limit, and 429s.

The PostgreSQL server is $BATCHVOID_BENCH_PG (a server URL; each run gets a new database in
it), else $BATCHVOID_TEST_PG, else one started for the part with .ci/postgres and stopped after.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import logscan, runs
from bench.configs import write_config
from bench.figures import Figure, Section, median
from bench.jobs import PROVIDERS, per_provider
from bench.process import BenchError, Finished
from bench.simulator import SimulatorProcess
from bench.workspace import Workspace, timeout_for

REPO = Path(__file__).resolve().parent.parent
EFFICIENCY_TARGET = 0.9
LIMIT_TARGET = 0.95
WORKERS = (1, 2, 4)
LIMIT_WORKERS = 4
LIMIT_SHARE = 0.5  # the shared limit, as a share of the limited workers' total capacity


def measure(ws: Workspace, _: SimulatorProcess) -> Section:
    sizes = ws.sizes
    section = Section("scaleout")
    latency, concurrency = sizes.scale_latency_ms, sizes.scale_concurrency
    capacity = len(PROVIDERS) * concurrency / (latency / 1000)  # one worker's voids/s, at most
    rounds: list[dict[str, Any]] = []
    with _server(ws) as server:
        faults = [f"latency_ms={latency}"]
        with SimulatorProcess(ws.logs, name="simulator-scaleout", faults=faults) as sim:
            config = write_config(ws.work / "scale.toml", sim.base_url, concurrency=concurrency)
            jobs = {  # N workers get N times the items: each runs about scale_seconds
                n: per_provider(
                    ws.work / f"scale-{n}.csv", round(n * capacity * sizes.scale_seconds / len(PROVIDERS))
                )
                for n in WORKERS
            }
            for r in range(1, sizes.rounds + 1):
                found = {}
                for n in WORKERS if r % 2 else reversed(WORKERS):
                    sim.reset()
                    found[n] = _workers(ws, sim, server, f"scale-{n}w-{r}", n, jobs[n], config)
                    ws.say(f"scaleout round {r}: {n} worker(s): {found[n]['per_s']:.0f} voids/s")
                rounds.append(found)
        # The shared limit: N workers could send `capacity` each; the account allows less.
        per_provider_limit = round(LIMIT_SHARE * LIMIT_WORKERS * capacity / len(PROVIDERS) * 10)
        window = f"{per_provider_limit}/10s"
        faults = [f"rate_limit={window},latency_ms={latency}"]
        with SimulatorProcess(ws.logs, name="simulator-scaleout-limit", faults=faults) as sim:
            config = write_config(
                ws.work / "scale-limit.toml", sim.base_url, concurrency=concurrency, rate_limits=[window]
            )
            each = round(per_provider_limit / 10 * sizes.scale_limit_seconds)
            job = per_provider(ws.work / "scale-limit.csv", each)
            limited = _workers(ws, sim, server, "scale-limit", LIMIT_WORKERS, job, config, by_provider=True)
    limit_total = per_provider_limit / 10 * len(PROVIDERS)
    limited["ratio"] = limited["per_s"] / limit_total
    ws.say(
        f"scaleout limit {window} per provider, {LIMIT_WORKERS} workers: {limited['per_s']:.1f}/s of "
        f"{limit_total:g}/s, {limited['throttled']} 429s"
    )
    one = median(f[1]["per_s"] for f in rounds)
    efficiency = {n: median(f[n]["per_s"] / (n * f[1]["per_s"]) for f in rounds) for n in WORKERS[1:]}
    section.details = {
        "latency_ms": latency,
        "concurrency_per_provider": concurrency,
        "worker_capacity_per_s": capacity,
        "rounds": rounds,
        "limit": {"window_per_provider": window, "workers": LIMIT_WORKERS, **limited},
    }
    section.figures = [
        Figure("scaleout.one_worker_per_s", "6 one worker: voids/s", one, "/s"),
        *(
            Figure(
                f"scaleout.efficiency_{n}",
                f"6 {n} workers: voids/s / ({n} x one worker's)",
                efficiency[n],
                at_least=EFFICIENCY_TARGET,
            )
            for n in WORKERS[1:]
        ),
        Figure(
            "scaleout.limit_ratio",
            f"6 {LIMIT_WORKERS} workers, shared {window}: achieved / limit",
            limited["ratio"],
            at_least=LIMIT_TARGET,
        ),
        Figure(
            "scaleout.limit_429s",
            f"6 {LIMIT_WORKERS} workers, shared limit: 429s",
            limited["throttled"],
            at_most=0,
        ),
    ]
    return section


def _workers(
    ws: Workspace,
    sim: SimulatorProcess,
    server: str,
    name: str,
    n: int,
    job: Path,
    config: Path,
    *,
    by_provider: bool = False,
) -> dict[str, Any]:
    """N workers of one job on a new database; the job's rate from their merged logs."""
    url = _database(server)
    done: list[Finished] = []
    errors: list[BaseException] = []
    timeout = timeout_for(job.stat().st_size // 20, seconds=ws.sizes.scale_limit_seconds)

    def worker(k: int) -> None:
        try:
            done.append(
                runs.batchvoid(ws, sim, f"{name}-{k}", job=job, config=config, ledger=url, timeout_s=timeout)
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"{name}: {errors[0]}")
    timelines = [logscan.read(runs.log_file(ws, f"{name}-{k}")) for k in range(n)]
    stats = sim.stats()
    voids = [sorted(t for times in tl.voided.values() for t in times) for tl in timelines]
    if all(voids):
        start, end = max(v[0] for v in voids), min(v[-1] for v in voids)  # all N at work
    else:  # a worker started after the others had done the job (a tiny size): the whole span
        start, end = float("-inf"), float("inf")
    if by_provider:  # a limit per provider: each provider's rate, summed
        per_s = sum(
            _rate_within(sorted(t for tl in timelines for t in tl.voided.get(p, [])), start, end)
            for p in PROVIDERS
        )
    else:
        per_s = _rate_within(sorted(t for v in voids for t in v), start, end)
    return {
        "workers": n,
        "per_s": per_s,
        "voided": stats["totals"]["voided"],
        "throttled": stats["totals"]["throttled"],
        "cpu_s": round(sum(d.cpu_s for d in done), 2),
        "wall_s": round(max(d.wall_s for d in done), 2),
    }


def _rate_within(times: list[float], start: float, end: float) -> float:
    """Events per second between `start` and `end` (sorted times); the whole span if that is empty."""
    inside = [t for t in times if start <= t <= end]
    return logscan.rate(inside if len(inside) > 1 else times)


def _database(server: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return f"{server.rpartition('/')[0]}/{name}"


@contextmanager
def _server(ws: Workspace) -> Iterator[str]:
    given = os.environ.get("BATCHVOID_BENCH_PG") or os.environ.get("BATCHVOID_TEST_PG")
    if given:
        yield given
        return
    script = REPO / ".ci" / "postgres"
    started = subprocess.run([str(script), "start"], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise BenchError(f"could not start a PostgreSQL server with {script}: {started.stderr.strip()}")
    values = dict(part.split("=", 1) for part in started.stdout.split()[1:])
    ws.say(f"scaleout: PostgreSQL at {values['BATCHVOID_TEST_PG']} ({values['PG_TMP']})")
    try:
        yield values["BATCHVOID_TEST_PG"]
    finally:
        subprocess.run([str(script), "stop", values["PG_TMP"]], capture_output=True, check=False)
