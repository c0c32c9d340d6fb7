"""The engine on the in-memory ledger against the simulator over loopback: what it writes, and when.

These pin the work queue's promises from the engine's side: one write per finished item on
the common path, attempts counted only when sent, claimed work given back on a stop, and
what a stopped run left in flight kept so.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from batchvoid.config import Config
from batchvoid.engine import Engine, FailureLimits
from batchvoid.ledger.memory import MemoryLedger
from batchvoid.models import Item, ItemState, StopKind
from batchvoid.preflight import simulator_env
from batchvoid.simulator import Simulator, SimulatorSettings
from tests.conftest import FAST_RETRY, sim_config

pytestmark = pytest.mark.anyio


class Log:
    """Records what the engine logs, as (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))

    def events(self, prefix: str = "") -> list[str]:
        return [event for _, event, _ in self.lines if event.startswith(prefix)]


def engine_for(
    config: Config, ledger: MemoryLedger, providers: Sequence[str], **options: Any
) -> tuple[Engine, Log]:
    env = simulator_env(config)
    adapters = {name: config.profiles[name].adapter(env) for name in providers}
    log = Log()
    engine = Engine(
        job=ledger.job,
        queue=ledger,
        adapters=adapters,
        profiles=config.profiles,
        log=log,
        retry=FAST_RETRY,
        **options,
    )
    return engine, log


def items(rows: Sequence[tuple[str, str]]) -> list[Item]:
    return [Item(line, provider, invoice) for line, (provider, invoice) in enumerate(rows, start=2)]


def states(ledger: MemoryLedger) -> Mapping[str, tuple[ItemState, int]]:
    return {row.item.invoice_id: (row.state, row.attempts) for row in ledger.rows}


async def test_one_write_and_one_log_line_per_finished_item(sim: tuple[Simulator, str]) -> None:
    """On the common path an item costs one Finish op and one log line; claims come a batch at a time."""
    _, url = sim
    ledger = MemoryLedger.of(items([("chargeover", f"c{n}") for n in range(600)]))
    engine, log = engine_for(sim_config(url), ledger, ["chargeover"])
    await engine.run()
    assert set(states(ledger).values()) == {(ItemState.VOIDED, 1)}
    assert ledger.calls["Finish"] == 600
    assert ledger.calls["Attempt"] == ledger.calls["Release"] == 0
    assert ledger.calls["claim"] <= 600 // 256 + 2  # batches, and one that comes back empty
    assert ledger.calls["apply"] < 600 // 2  # group commits
    assert log.events("void.") == ["void.succeeded"] * 600


async def test_a_lane_claims_its_next_batch_before_its_workers_run_out(
    sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim is a round trip to a ledger thread (26 ms on a busy run), and the workers that
    found the batch used up waited it out one by one (85 ms each). Each claim after the first
    is made while the lane still holds half a batch."""
    _, url = sim
    ledger = MemoryLedger.of(items([("chargeover", f"c{n}") for n in range(1000)]))
    engine, _ = engine_for(sim_config(url), ledger, ["chargeover"])
    left: list[int] = []  # items claimed and not yet taken, as each claim starts
    claim = MemoryLedger.claim

    def claiming(self: MemoryLedger, *args: Any) -> Any:
        left.append(len(engine.lanes["chargeover"].claimed))
        return claim(self, *args)

    monkeypatch.setattr(MemoryLedger, "claim", claiming)
    await engine.run()
    assert set(states(ledger).values()) == {(ItemState.VOIDED, 1)}
    assert len(left) == 1000 // engine.lanes["chargeover"].claim_size + 2  # and the empty one
    assert left[0] == 0
    assert min(left[1:]) > 0, left


async def test_a_batch_claimed_as_the_lane_stops_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next batch is claimed ahead; a lane that stops while that claim is out gives the
    batch back with the rest of what its workers did not take."""
    simulator = Simulator(SimulatorSettings.from_specs(["sellapp:revoke_after=200"]))
    ledger = MemoryLedger.of(items([("sellapp", f"s{n}") for n in range(600)]))
    claim, stop_lane = MemoryLedger.claim, Engine._stop_lane
    stopped_lane = threading.Event()
    claims = 0

    def claiming(self: MemoryLedger, *args: Any) -> Any:
        nonlocal claims
        claims += 1
        if claims == 2:  # the one made ahead: it comes back once the lane has stopped
            assert stopped_lane.wait(10)
        return claim(self, *args)

    def stopping(self: Engine, *args: Any, **kwargs: Any) -> None:
        stop_lane(self, *args, **kwargs)
        stopped_lane.set()

    monkeypatch.setattr(MemoryLedger, "claim", claiming)
    monkeypatch.setattr(Engine, "_stop_lane", stopping)
    async with simulator.serve() as url:
        engine, _ = engine_for(sim_config(url), ledger, ["sellapp"])
        await engine.run()
    stopped = engine.lanes["sellapp"].stopped
    assert stopped is not None
    assert stopped.kind is StopKind.AUTH_REFUSED
    assert claims == 2
    got = list(states(ledger).values())
    assert got[:200] == [(ItemState.VOIDED, 1)] * 200
    refused = simulator.stats()["sellapp"]["requests"] - 200
    assert got[200 : 200 + refused] == [(ItemState.PENDING, 1)] * refused  # refused: sent, not voided
    assert set(got[200 + refused :]) == {(ItemState.PENDING, 0)}  # the second batch's 256 among them
    assert not any(row.claimed for row in ledger.rows)  # each got its Finish or Release


async def test_a_retry_and_a_throttle_are_attempts_the_final_answer_is_the_finish() -> None:
    """A 5xx or a 429 that did not finish the item is an Attempt (and an attempt line); the item's requests all count."""
    simulator = Simulator(SimulatorSettings.from_specs(["maple:error_rate=0.5"], seed=11))
    async with simulator.serve() as url:
        ledger = MemoryLedger.of(items([("maple", f"m{n}") for n in range(20)]))
        engine, log = engine_for(sim_config(url, max_attempts=50), ledger, ["maple"])
        await engine.run()
    requests = simulator.stats()["maple"]["requests"]
    assert {s for s, _ in states(ledger).values()} == {ItemState.VOIDED}
    assert sum(row.attempts for row in ledger.rows) == requests == engine.lanes["maple"].requests
    assert ledger.calls["Attempt"] == len(ledger.history) == requests - 20 > 0
    assert {a.outcome for a in ledger.history} == {"retryable"}
    assert len(log.events("void.")) == requests  # one line per request: attempts, then the outcome


async def test_a_halt_gives_back_the_claimed_items_with_no_request_counted(
    sim: tuple[Simulator, str],
) -> None:
    """Items claimed but never sent (waiting for the pace when the run halts) go back to pending with 0 attempts."""
    _, url = sim
    rows = [("chargeover", "paid_1")] + [("chargeover", f"c{n}") for n in range(30)]
    ledger = MemoryLedger.of(items(rows))
    config = sim_config(url, {"chargeover": ["1/10s"]}, concurrency=4)
    engine, _ = engine_for(config, ledger, ["chargeover"], failure_limits=FailureLimits(count=0))
    await engine.run()  # the paid invoice fails first; the halt cuts the others' 10 s pace wait
    assert engine.halted is not None
    assert engine.halted.kind is StopKind.FAILURES
    got = states(ledger)
    assert got.pop("paid_1") == (ItemState.FAILED, 1)
    assert set(got.values()) == {(ItemState.PENDING, 0)}


async def test_what_a_stopped_run_left_in_flight_stays_so_until_it_is_sent(
    sim: tuple[Simulator, str],
) -> None:
    """An item left in flight (maybe sent) that this run claims but does not reach stays in flight; sent, it finishes."""
    simulator, url = sim
    ledger = MemoryLedger.of(items([("sellapp", f"s{n}") for n in range(40)]))
    for row in ledger.rows[:20]:
        row.state = ItemState.IN_FLIGHT  # a run died with these claimed
    simulator.revoke("sellapp")
    engine, _ = engine_for(sim_config(url, concurrency=2), ledger, ["sellapp"])
    await engine.run()
    stopped = engine.lanes["sellapp"].stopped
    assert stopped is not None
    assert stopped.kind is StopKind.AUTH_REFUSED
    got = [states(ledger)[f"s{n}"] for n in range(40)]
    sent = simulator.stats()["sellapp"]["requests"]
    assert 1 <= sent <= 2  # the lane's in-flight ones
    # The refused requests count; the items sent and refused stay in flight (they may have been
    # voided before: the 401 says nothing of that), as do the ones not reached.
    assert got[:20] == [(ItemState.IN_FLIGHT, 1)] * sent + [(ItemState.IN_FLIGHT, 0)] * (20 - sent)
    assert got[20:] == [(ItemState.PENDING, 0)] * 20
    assert ledger.calls["Finish"] == 0
    assert ledger.calls["Release"] == sent + 20  # no write for what stays as it was
