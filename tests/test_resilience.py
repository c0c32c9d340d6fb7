"""Surviving real providers: faults, 429 storms, revoked keys and safety stops, on the simulator."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import re
import sqlite3
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from batchvoid.config import Config, Settings, from_dict
from batchvoid.consolelog import ConsoleLog
from batchvoid.engine import FailureLimits
from batchvoid.errors import ConfigError, LedgerError, RunAborted
from batchvoid.models import Item, ItemState, Request
from batchvoid.providers import Adapter
from batchvoid.run import EXIT_OK, EXIT_STOPPED
from batchvoid.simulator import Simulator, SimulatorSettings
from tests.conftest import job, run_on, sim_config

pytestmark = pytest.mark.anyio
PROVIDERS = ("chargeover", "rapyd", "campfire", "maple", "sellapp")


def events(tmp_path: Path, name: str = "job.csv.log") -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]


async def test_chaos_run_ends_with_every_item_in_its_right_state(tmp_path: Path) -> None:
    """2,000 items through 5xx, timeouts after the void, resets and a 429 limit below what a lane sends even on a busy machine."""
    settings = SimulatorSettings.from_specs(
        ["error_rate=0.10,timeout_rate=0.05,reset_rate=0.02,rate_limit=100/1s,retry_after=none"],
        seed=11,
    )
    simulator = Simulator(settings)
    rows = [(p, f"chaos-{p}-{n}") for n in range(400) for p in PROVIDERS]
    path = job(tmp_path, rows)
    async with simulator.serve() as url:
        # Configured at 400/s per provider, the simulator allows 100/s: the lanes must adapt. A lane
        # sends about 200/s in its first second even with the CPU oversubscribed, so the limit bites
        # from the start; over a 1 s window, so the lane measures the rate it drew the 429 at.
        config = sim_config(
            url, {p: ["200/0.5s"] for p in PROVIDERS}, concurrency=16, timeout_s=0.25, max_attempts=25
        )
        report = await run_on(config, path, tmp_path)
    assert report.exit_status == EXIT_OK, report.stopped
    assert sum(report.counts.values()) == 2000
    assert all(state.is_done for _, state in report.counts)
    # Every invoice voided exactly once at the provider, however often it was sent.
    assert len(simulator.voids_applied) == 2000
    assert set(simulator.voids_applied.values()) == {1}
    stats = simulator.stats()
    assert stats["totals"]["faults"]["timeout"] > 40
    assert stats["totals"]["faults"]["error"] > 120
    assert stats["totals"]["faults"]["reset"] > 20
    # Items whose void timed out after it happened were resent and counted as done.
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    resent = db.execute(
        "SELECT count(*) FROM items WHERE state = 'already_void' AND attempts > 1"
    ).fetchone()[0]
    assert resent > 0
    # The lanes adapt: 429s fall away, so the last third of the run meets fewer than the first,
    # or none at all (a loaded machine can start the run slowly, so the limit first bites later).
    throttled = sorted(str(e["timestamp"]) for e in events(tmp_path) if e.get("outcome") == "throttled")
    attempts = sorted(str(e["timestamp"]) for e in events(tmp_path) if e["event"].startswith("void."))
    assert throttled, "the simulator's limit never bit: the test proves nothing"
    first, last = attempts[: len(attempts) // 3], attempts[-len(attempts) // 3 :]
    early = sum(1 for t in throttled if t <= first[-1])
    late = sum(1 for t in throttled if t >= last[0])
    assert late < early or late == 0, (early, late)


async def test_a_key_revoked_mid_run_stops_only_its_provider(tmp_path: Path) -> None:
    """After 10 voids Maple's key is revoked: Maple stops with its items pending, the others finish."""
    simulator = Simulator(SimulatorSettings.from_specs(["maple:revoke_after=10"]))
    rows = [(p, f"rv{n}") for n in range(40) for p in PROVIDERS]
    path = job(tmp_path, rows)
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, concurrency=2), path, tmp_path)
    assert report.exit_status == EXIT_STOPPED
    (reason,) = report.stopped
    assert "maple: the provider refused the credentials" in reason
    assert "Check MAPLE_API_TOKEN" in reason
    assert report.counts[("maple", ItemState.VOIDED)] == 10
    assert report.counts[("maple", ItemState.PENDING)] == 30
    assert all(report.counts[(p, ItemState.VOIDED)] == 40 for p in PROVIDERS if p != "maple")
    assert simulator.stats()["maple"]["auth_failed"] <= 2  # one per worker in flight, then silence


async def test_item_after_item_rejected_stops_the_lane(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """A lane whose every answer is a permanent failure stops after N in a row, showing the error."""
    simulator, url = sim
    rows = [("sellapp", f"missing_{n}") for n in range(40)] + [("rapyd", f"ok{n}") for n in range(10)]
    path = job(tmp_path, rows)
    report = await run_on(sim_config(url, concurrency=1, stop_after_rejections=5), path, tmp_path)
    assert report.exit_status == EXIT_STOPPED
    (reason,) = report.stopped
    assert reason.startswith(
        "sellapp: 5 items in a row were rejected, the last with 'HTTP 404: Invoice not found.'"
    )
    assert report.counts[("sellapp", ItemState.FAILED)] == 5
    assert report.counts[("sellapp", ItemState.PENDING)] == 35
    assert report.counts[("rapyd", ItemState.VOIDED)] == 10
    assert simulator.stats()["sellapp"]["requests"] == 5


async def test_a_success_resets_the_rejection_streak(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """Rejections broken up by successes never stop a lane, however many there are."""
    _, url = sim
    rows = [("sellapp", f"{'missing_' if n % 4 else ''}{n}") for n in range(40)]
    report = await run_on(
        sim_config(url, concurrency=1, stop_after_rejections=5), job(tmp_path, rows), tmp_path
    )
    assert report.stopped == ()
    assert report.counts[("sellapp", ItemState.FAILED)] == 30


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (FailureLimits(count=10), "11 items failed, more than --max-failures 10"),
        (
            FailureLimits(rate=0.3, sample=50),
            "of 50 finished items failed (50%), more than --max-failure-rate 0.3",
        ),
    ],
)
async def test_failure_limits_stop_dispatching(
    sim: tuple[Simulator, str], tmp_path: Path, limits: FailureLimits, message: str
) -> None:
    """--max-failures and --max-failure-rate stop every lane and leave the rest pending (exit 3)."""
    _, url = sim
    rows = [("chargeover", f"{'paid_' if n % 2 else ''}{n}") for n in range(400)]
    report = await run_on(
        sim_config(url, concurrency=1), job(tmp_path, rows), tmp_path, failure_limits=limits
    )
    assert report.exit_status == EXIT_STOPPED
    assert any(message in reason for reason in report.stopped), report.stopped
    assert report.counts[("chargeover", ItemState.PENDING)] > 300


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_retry_after_pauses_the_whole_lane(tmp_path: Path, form: str) -> None:
    """A 429 with Retry-After (seconds or HTTP date) holds every request of the lane until it passes."""
    simulator = Simulator(SimulatorSettings.from_specs([f"campfire:rate_limit=5/0.2s,retry_after={form}"]))
    rows = [("campfire", f"ra{n}") for n in range(12)]
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, concurrency=4), job(tmp_path, rows), tmp_path)
    assert report.exit_status == EXIT_OK
    log = events(tmp_path)
    pauses = [e for e in log if e["event"] == "lane.throttled"]
    assert pauses
    asked = [e["retry_after"] for e in pauses]
    assert all(isinstance(r, float) and r >= 0 for r in asked)
    arrivals = sorted(simulator.arrivals["campfire"])
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # The longest wait the provider asked for was waited out before the lane's next request.
    assert max(gaps) >= 0.95 * max(asked)  # type: ignore[type-var]
    assert simulator.stats()["campfire"]["throttled"] <= 8  # it did not keep hammering while paused


async def test_a_retry_after_above_max_pause_s_stops_only_its_provider(tmp_path: Path) -> None:
    """Retry-After 3600 stops that lane at once, naming the provider and the cap (exit 3); its items stay pending, the others finish."""
    simulator = Simulator(SimulatorSettings.from_specs(["campfire:rate_limit=1/3600s,retry_after=seconds"]))
    rows = [(p, f"cap{n}") for n in range(20) for p in PROVIDERS]
    async with simulator.serve() as url:
        with anyio.fail_after(10):  # waiting out the hour would hang here
            report = await run_on(sim_config(url, concurrency=4), job(tmp_path, rows), tmp_path)
    assert report.exit_status == EXIT_STOPPED
    (reason,) = report.stopped
    assert reason.startswith(
        "campfire: the provider asked to wait 3600s (Retry-After), more than max_pause_s (900s); "
        "no more requests go to it in this run."
    )
    # One void got through before the limit bit; the requests in flight with it went back to pending.
    assert {s: n for (p, s), n in report.counts.items() if p == "campfire"} == {
        ItemState.VOIDED: 1,
        ItemState.PENDING: 19,
    }
    assert all(report.counts[(p, ItemState.VOIDED)] == 20 for p in PROVIDERS if p != "campfire")
    assert simulator.stats()["campfire"]["throttled"] <= 4  # the requests in flight, then silence
    assert not [e for e in events(tmp_path) if e["event"] == "lane.paused"]


async def test_only_429s_for_give_up_throttled_after_s_stop_only_its_provider(tmp_path: Path) -> None:
    """429s without Retry-After and no success for give_up_throttled_after_s stop that lane (exit 3), items pending."""
    simulator = Simulator(SimulatorSettings.from_specs(["maple:rate_limit=1/3600s"]))
    rows = [(p, f"gu{n}") for n in range(10) for p in PROVIDERS]
    async with simulator.serve() as url:
        config = sim_config(url, concurrency=4, give_up_throttled_after_s=0.6)
        with anyio.fail_after(5):
            report = await run_on(config, job(tmp_path, rows), tmp_path)
    assert report.exit_status == EXIT_STOPPED
    (reason,) = report.stopped
    assert re.match(
        r"maple: nothing but 429s for 0\.\d+s, and its next try would be \d\.\d+s in, "
        r"past give_up_throttled_after_s \(0\.6s\); no more requests go to it in this run\.",
        reason,
    ), reason
    assert {s: n for (p, s), n in report.counts.items() if p == "maple"} == {
        ItemState.VOIDED: 1,
        ItemState.PENDING: 9,
    }
    assert all(report.counts[(p, ItemState.VOIDED)] == 10 for p in PROVIDERS if p != "maple")
    throttled = [e for e in events(tmp_path) if e["event"] == "lane.throttled"]
    assert len({e["pause_s"] for e in throttled}) >= 2  # it backed off at least once before giving up
    assert report.elapsed_s < 2


async def test_a_long_pause_is_a_warning_on_the_quiet_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under --quiet, a long lane pause is a warning naming the provider, its length and its UTC end; item failures stay off."""
    monkeypatch.setattr("batchvoid.pace.LONG_PAUSE_S", 0.2)  # the first backoff (0.25 s) is "long"
    simulator = Simulator(SimulatorSettings.from_specs(["campfire:rate_limit=2/0.2s"]))
    rows = [("campfire", f"lp{n}") for n in range(3)] + [("sellapp", "paid_1"), ("sellapp", "ok1")]
    out = io.StringIO()
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    async with simulator.serve() as url:
        report = await run_on(
            sim_config(url, concurrency=4),
            job(tmp_path, rows),
            tmp_path,
            out=out,
            console=ConsoleLog(quiet=True),
        )
    assert report.counts[("campfire", ItemState.VOIDED)] == 3
    lines = out.getvalue().splitlines()
    paused = [e for e in events(tmp_path) if e["event"] == "lane.paused"]
    assert paused
    assert all(e["level"] == "warning" and e["provider"] == "campfire" for e in paused)
    until = dt.datetime.strptime(str(paused[0]["until"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert before <= until <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    assert [line.split("] ")[1].split()[0] for line in lines] == [
        "run.started",
        *(["lane.paused"] * len(paused)),
        "run.finished",
    ]
    assert all(
        re.search(r"lane\.paused .*provider=campfire pause_s=\d+ until=\S+Z$", line) for line in lines[1:-1]
    )
    assert "void.failed" in (tmp_path / "job.csv.log").read_text()  # in the file, not on the console


HEADER_ERROR = ValueError("Forbidden control character detected in headers.\r\nPotential header injection")


class Exploding:
    """A real adapter whose void requests raise `error` after the first `good` ones."""

    def __init__(self, adapter: Adapter, good: int, error: Exception) -> None:
        self._adapter = adapter
        self._good = good
        self._error = error

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        if self._good <= 0:
            raise self._error
        self._good -= 1
        return self._adapter.void_request(item, idempotency_key)

    def __getattr__(self, name: str) -> object:
        return getattr(self._adapter, name)


def exploding(config: Config, provider: str, good: int, error: Exception = HEADER_ERROR) -> Config:
    """The config with `provider`'s adapter wrapped in `Exploding`."""
    profile = config.profiles[provider]
    spec = replace(profile.spec, build=lambda *args: Exploding(profile.spec.build(*args), good, error))
    return replace(config, profiles={**config.profiles, provider: replace(profile, spec=spec)})


async def test_an_unexpected_error_in_one_lane_stops_only_that_lane(
    sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    """A lane whose adapter raises stops with a one-line message naming it and the error (exit 3); its items stay pending, the others finish."""
    simulator, url = sim
    rows = [(p, f"ue{n}") for n in range(20) for p in PROVIDERS]
    out = io.StringIO()
    config = exploding(sim_config(url, concurrency=2), "rapyd", good=3)
    report = await run_on(config, job(tmp_path, rows), tmp_path, out=out)
    assert report.exit_status == EXIT_STOPPED
    (reason,) = report.stopped
    assert re.match(
        r"rapyd: unexpected error at invoice 'ue\d+' \(line \d+\): ValueError: Forbidden control "
        r"character detected in headers\. Potential header injection; no more requests go to it in "
        r"this run\. The log file has its traceback",
        reason,
    ), reason
    assert {s: n for (p, s), n in report.counts.items() if p == "rapyd"} == {
        ItemState.VOIDED: 3,
        ItemState.PENDING: 17,
    }
    assert all(report.counts[(p, ItemState.VOIDED)] == 20 for p in PROVIDERS if p != "rapyd")
    assert simulator.stats()["rapyd"]["requests"] == 3
    console = [
        line for line in out.getvalue().splitlines() if "run.finished" not in line
    ]  # it has the counts
    assert len([line for line in console if "rapyd" in line]) == 1
    assert "lane.stopped" in next(line for line in console if "rapyd" in line)
    assert "Traceback" not in out.getvalue()
    (stopped,) = [e for e in events(tmp_path) if e["event"] == "lane.stopped"]
    assert str(stopped["exception"]).startswith("Traceback (most recent call last):")
    assert "in void_request" in str(stopped["exception"])


async def test_the_runs_own_errors_still_end_the_run(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """A batchvoid error inside a lane (the ledger failing) is not a lane fault: it ends the run."""
    _, url = sim
    rows = [(p, f"le{n}") for n in range(20) for p in PROVIDERS]
    error = LedgerError("ledger: disk full")
    config = exploding(sim_config(url, concurrency=2), "rapyd", good=3, error=error)
    with pytest.raises(RunAborted, match=r"^ledger: disk full$") as caught:  # one line, exit 3 at the CLI
        await run_on(config, job(tmp_path, rows), tmp_path)
    assert caught.value.requests > 0
    assert caught.value.__cause__ is not None


def test_pause_limits_are_settings_of_defaults_and_profiles() -> None:
    """max_pause_s and give_up_throttled_after_s come from [defaults], a profile overrides; a bad value names the key."""
    table = {
        "defaults": {"max_pause_s": 120, "give_up_throttled_after_s": 600.5},
        "providers": {
            "rapyd": {"type": "rapyd", "max_pause_s": 30},
            "maple": {"type": "maple"},
        },
    }
    profiles = from_dict(table, source="t.toml").profiles
    assert (profiles["rapyd"].settings.max_pause_s, profiles["maple"].settings.max_pause_s) == (30.0, 120.0)
    assert profiles["rapyd"].settings.give_up_throttled_after_s == 600.5
    assert (Settings().max_pause_s, Settings().give_up_throttled_after_s) == (900.0, 1800.0)
    table["providers"]["maple"]["give_up_throttled_after_s"] = 0  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"\[providers.maple\]: give_up_throttled_after_s must be a number"):
        from_dict(table, source="t.toml")
