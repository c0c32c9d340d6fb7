"""Shared fixtures: the anyio backend, a loopback simulator, and helpers to run jobs on it."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import anyio
import pytest

from batchvoid import config as configuration
from batchvoid import locations
from batchvoid.config import Config, parse_rate_limit
from batchvoid.engine import Retry
from batchvoid.preflight import RunOptions, simulator_env
from batchvoid.providers import REGISTRY
from batchvoid.run import RunReport, run
from batchvoid.simulator import Simulator, SimulatorSettings

FAST_RETRY = Retry(base_s=0.001, cap_s=0.005)
BATCHVOID = [sys.executable, "-m", "batchvoid"]


@pytest.fixture(autouse=True)
def no_configuration_from_this_machine(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads the developer's own batchvoid.toml or ledger: the user and system directories are empty ones."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv(locations.CONFIG_ENV, raising=False)
    monkeypatch.delenv(locations.LEDGER_ENV, raising=False)
    monkeypatch.setattr(locations, "SYSTEM_DIR", home / "etc" / "batchvoid")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def profiles() -> Config:
    """The built-in configuration: one profile per provider type, named after it."""
    return configuration.builtin()


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    """A fault-free simulator on a loopback port, with its base URL."""
    simulator = Simulator(SimulatorSettings())
    async with simulator.serve() as base_url:
        yield simulator, base_url


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def sim_config(base_url: str, limits: Mapping[str, Sequence[str]] | None = None, **settings: Any) -> Config:
    """The built-in profiles pointed at `base_url`, unlimited unless `limits` says otherwise."""
    cfg = configuration.builtin().pointed_at(base_url)
    limits = limits or {}
    profiles = {
        name: replace(
            p,
            rate_limits=tuple(parse_rate_limit(r) for r in limits.get(name, ())),
            settings=replace(p.settings, **settings),
        )
        for name, p in cfg.profiles.items()
    }
    return replace(cfg, profiles=profiles)


async def run_on(
    config: Config, job_file: Path, tmp_path: Path, *, out: io.StringIO | None = None, **options: Any
) -> RunReport:
    """Run a job for real against the simulator the config points at, with its credentials.

    The ledger is `tmp_path`'s ledger.sqlite unless `ledger=` names another (a PostgreSQL URL).
    """
    options.setdefault("ledger", tmp_path / "ledger.sqlite")
    opts = RunOptions(job_file=job_file, retry=FAST_RETRY, **options)
    return await run(opts, out=out or io.StringIO(), env=simulator_env(config), config=config)


async def run_until(
    config: Config, job_file: Path, tmp_path: Path, done: Callable[[], bool], poll_s: float = 0.005
) -> None:
    """Start `run_on` and cancel it (as a kill would leave it, mid-request) once `done()` holds."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_on, config, job_file, tmp_path)
            while not done():
                await anyio.sleep(poll_s)
            scope.cancel()


def job(tmp_path: Path, rows: Sequence[tuple[str, str]], name: str = "job.csv") -> Path:
    """A CSV job file of (provider, invoice_id) rows."""
    return write(tmp_path / name, "provider,invoice_id\n" + "".join(f"{p},{i}\n" for p, i in rows))


@pytest.fixture
def standalone_simulator(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`batchvoid simulate` in its own process, so its state outlives the runs we kill."""
    proc = subprocess.Popen(
        [*BATCHVOID, "simulate", "--port", "0", "--fault", "latency_ms=30,jitter_ms=20", "--seed", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        match = re.search(r"listening on (http://\S+)", proc.stderr.readline())
        assert match, "the simulator did not say where it listens"
        env = {}
        for _ in range(sum(len(spec.credentials) for spec in REGISTRY.values())):
            name, value = proc.stdout.readline().strip().removeprefix("export ").split("=", 1)
            env[name] = value
        yield match[1], env
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def unavailable(*, here: str, under_ci: str) -> NoReturn:
    """What a test needs from outside the repository (a server, a shared file) is not there:
    skipped on a developer's machine, a failure under CI=true, where .ci/run and the checkout
    provide everything, so that no test silently drops out of CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(under_ci)
    pytest.skip(here)


PG_ENV = "BATCHVOID_TEST_PG"  # the URL of a throwaway PostgreSQL server: .ci/run starts one (.ci/postgres)


def no_postgres() -> NoReturn:
    """No PostgreSQL server for the tests that need one: skip here, fail under CI."""
    unavailable(
        here=f'no PostgreSQL server: eval "$(.ci/postgres start)" starts one and sets {PG_ENV}',
        under_ci=f"{PG_ENV} is not set under CI: .ci/run starts the PostgreSQL server the tests need",
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped after it.

    Skipped without BATCHVOID_TEST_PG on a developer's machine (`eval "$(.ci/postgres start)"`
    starts a server and sets it), and a failure under CI=true, so these tests never drop out.
    """
    import uuid

    server = os.environ.get(PG_ENV)
    if not server:
        no_postgres()
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base, _, _ = server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
