"""Canary and partial runs: --limit N sends exactly N items then stops (exit 3); --provider picks lanes."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from batchvoid.errors import ConfigError
from batchvoid.models import ItemState
from batchvoid.run import EXIT_OK, EXIT_STOPPED
from batchvoid.simulator import Simulator, SimulatorSettings
from tests.conftest import job, run_on, run_until, sim_config

pytestmark = pytest.mark.anyio
PROVIDERS = ("chargeover", "rapyd", "campfire", "maple", "sellapp")


def sent_items(simulator: Simulator, before: Counter[tuple[str, str]]) -> set[tuple[str, str]]:
    return {key for key, n in simulator.void_requests.items() if n > before.get(key, 0)}


async def test_limit_sends_exactly_n_items_then_stops_with_the_rest_pending(tmp_path: Path) -> None:
    """--limit 7 over five lanes: 7 items sent, exit 3 naming --limit; the next runs send the rest once."""
    simulator = Simulator(SimulatorSettings())
    rows = [(p, f"inv-{p}-{n}") for n in range(6) for p in PROVIDERS]
    path = job(tmp_path, rows)
    async with simulator.serve() as url:
        config = sim_config(url, concurrency=4)
        report = await run_on(config, path, tmp_path, limit=7)
        assert len(sent_items(simulator, Counter())) == 7
        assert report.exit_status == EXIT_STOPPED
        assert any(reason.startswith("--limit 7: ") for reason in report.stopped)
        assert sum(n for (_, s), n in report.counts.items() if s is ItemState.PENDING) == len(rows) - 7
        assert report.run is not None
        assert report.run.end is not None
        assert report.run.end.exit_status == EXIT_STOPPED
        before = Counter(simulator.void_requests)
        second = await run_on(config, path, tmp_path, limit=7)
        assert len(sent_items(simulator, before)) == 7
        last = await run_on(config, path, tmp_path, limit=len(rows))  # exactly what is left: not a stop
    assert last.exit_status == EXIT_OK
    assert last.stopped == ()
    assert second.exit_status == EXIT_STOPPED
    assert all(simulator.voids_applied[key] == 1 for key in rows)


async def test_limit_counts_the_items_a_killed_run_left_in_flight(tmp_path: Path) -> None:
    """On resume, in-flight items are claimed first and count toward --limit: still exactly N sent."""
    simulator = Simulator(SimulatorSettings.from_specs(["latency_ms=5"]))
    rows = [(p, f"inv-{p}-{n}") for n in range(40) for p in PROVIDERS]
    path = job(tmp_path, rows)
    async with simulator.serve() as url:
        config = sim_config(url, concurrency=4)
        await run_until(config, path, tmp_path, lambda: sum(simulator.void_requests.values()) >= 30)
        db = sqlite3.connect(tmp_path / "ledger.sqlite")
        unfinished = list(
            db.execute(
                "SELECT provider, invoice_id, state FROM items WHERE state IN ('pending', 'in_flight') ORDER BY line"
            )
        )
        db.close()
        in_flight = [(p, i) for p, i, state in unfinished if state == "in_flight"]
        assert in_flight
        before = Counter(simulator.void_requests)
        limit = len(in_flight) + 3
        report = await run_on(config, path, tmp_path, limit=limit)
    assert report.run is not None
    # An in-flight item the killed run had sent is answered from the simulator's idempotency
    # store, which counts no second void request: the run's own log says what it sent.
    lines = [json.loads(line) for line in (tmp_path / "job.csv.log").read_text().splitlines()]
    sent = {
        (e["provider"], e["invoice_id"])
        for e in lines
        if e["run_id"] == report.run.run_id and e["event"].startswith("void.")
    }
    assert len(sent) == limit
    assert sent_items(simulator, before) <= sent
    for provider in PROVIDERS:  # each lane took its unfinished items in file order: in flight first
        mine = [(p, i) for p, i, _ in unfinished if p == provider]
        taken = [key for key in mine if key in sent]
        assert taken == mine[: len(taken)], provider
    assert report.exit_status == EXIT_STOPPED


async def test_provider_runs_only_the_named_lanes(tmp_path: Path) -> None:
    """--provider rapyd --provider maple sends only theirs; the rest stay pending, exit 3 naming them."""
    simulator = Simulator(SimulatorSettings())
    rows = [(p, f"inv-{p}-{n}") for n in range(3) for p in PROVIDERS]
    async with simulator.serve() as url:
        report = await run_on(sim_config(url), job(tmp_path, rows), tmp_path, providers=("rapyd", "maple"))
    assert {p for p, _ in simulator.void_requests} == {"rapyd", "maple"}
    assert report.exit_status == EXIT_STOPPED
    assert report.counts[("chargeover", ItemState.PENDING)] == 3
    assert report.counts[("rapyd", ItemState.VOIDED)] == 3
    assert any("the items of campfire, chargeover, sellapp were left pending" in r for r in report.stopped)


async def test_an_unknown_provider_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """--provider rapid names the configured profiles; nothing is recorded or sent."""
    simulator = Simulator(SimulatorSettings())
    async with simulator.serve() as url:
        with pytest.raises(ConfigError, match=r"--provider 'rapid': no such profile .* \(configured: "):
            await run_on(sim_config(url), job(tmp_path, [("rapyd", "a")]), tmp_path, providers=("rapid",))
    assert not simulator.void_requests
