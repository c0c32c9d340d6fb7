"""The contenders, each as a measured child process: `batchvoid run`, the aiohttp peer, xargs + curl."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from bench import peer_curl
from bench.configs import COMPANY_ID
from bench.process import BenchError, Finished, run
from bench.simulator import SimulatorProcess
from bench.workspace import Workspace

PEER = Path(__file__).with_name("peer_aiohttp.py")


def batchvoid(
    ws: Workspace,
    sim: SimulatorProcess,
    name: str,
    *,
    job: Path,
    config: Path,
    timeout_s: float,
    ledger: Path | str | None = None,
    watch: Callable[[], bool] | None = None,
    watch_every_s: float = 0.5,
) -> Finished:
    """`batchvoid run JOB --config C --ledger L --log-file <name>.log`, as a user runs it.

    A new ledger (`<name>.sqlite`) unless `ledger` is given (a file, or a postgresql:// URL).
    Raises BenchError unless it exits 0 or was stopped by `watch`.
    """
    ledger = ledger or ws.work / f"{name}.sqlite"
    args = [
        sys.executable,
        "-m",
        "batchvoid",
        "run",
        str(job),
        "--config",
        str(config),
        "--ledger",
        str(ledger),
        "--log-file",
        str(log_file(ws, name)),
    ]
    done = run(
        args,
        name=name,
        logs=ws.logs,
        env=ws.env(sim),
        timeout_s=timeout_s,
        watch=watch,
        watch_every_s=watch_every_s,
    )
    if done.returncode != 0 and not done.stopped:
        raise BenchError(f"{name}: batchvoid run exited with {done.returncode}:\n{done.tail()}")
    return done


def log_file(ws: Workspace, name: str) -> Path:
    return ws.work / f"{name}.log"


def aiohttp_peer(
    ws: Workspace, sim: SimulatorProcess, name: str, *, job: Path, concurrency: int, timeout_s: float
) -> Finished:
    """bench/peer_aiohttp.py over the job, `concurrency` voids in flight."""
    args = [
        sys.executable,
        str(PEER),
        str(job),
        "--base-url",
        sim.base_url,
        "--concurrency",
        str(concurrency),
        "--company-id",
        COMPANY_ID,
    ]
    done = run(args, name=name, logs=ws.logs, env=ws.env(sim), timeout_s=timeout_s)
    if done.returncode != 0:
        raise BenchError(f"{name}: the aiohttp peer exited with {done.returncode}:\n{done.tail()}")
    return done


def curl_peer(
    ws: Workspace, sim: SimulatorProcess, name: str, *, job: Path, concurrency: int, timeout_s: float
) -> Finished:
    """`xargs -P concurrency -L 1 curl ...` over the job's requests."""
    requests = ws.work / f"{name}.args"
    peer_curl.write_requests(job, requests, sim.base_url, sim.env, job.name)
    done = run(
        peer_curl.command(concurrency),
        name=name,
        logs=ws.logs,
        env=ws.env(sim),
        timeout_s=timeout_s,
        stdin=requests,
    )
    if done.returncode != 0:
        raise BenchError(f"{name}: xargs + curl exited with {done.returncode}:\n{done.tail()}")
    return done
