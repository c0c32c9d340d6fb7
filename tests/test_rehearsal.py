"""A real run never inherits a rehearsal's outcomes, nor those of another base URL or account."""

from __future__ import annotations

import io
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid.cli import main
from batchvoid.config import Config, builtin, from_dict
from batchvoid.errors import LedgerError
from batchvoid.models import ItemState
from batchvoid.simulator import Simulator, SimulatorSettings, provider_url
from tests.conftest import job, run_on, sim_config

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parent.parent
ROWS = [("maple", "m1"), ("rapyd", "r1"), ("sellapp", "s1")]


def with_option(config: Config, profile: str, **changes: str) -> Config:
    """The configuration with one profile's account options (or base_url) changed."""
    old = config.profiles[profile]
    base_url = changes.pop("base_url", old.base_url)
    new = replace(old, base_url=base_url, options={**old.options, **changes})
    return replace(config, profiles={**config.profiles, profile: new})


async def test_a_real_run_refuses_a_job_that_was_only_rehearsed(
    sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    """Rehearsed on a ledger, the same job's real run is refused (exit 2) and sends nothing, not 'resumed as voided'."""
    simulator, url = sim
    path = job(tmp_path, ROWS)
    rehearsal = await run_on(sim_config(url), path, tmp_path, simulate=True)
    assert rehearsal.exit_status == 0
    assert sum(simulator.void_requests.values()) == 0  # the rehearsal had its own simulator
    with pytest.raises(LedgerError, match=r"is a rehearsal: its items went to the simulator"):
        await run_on(sim_config(url), path, tmp_path)
    assert sum(simulator.void_requests.values()) == 0


async def test_a_rehearsal_refuses_a_real_runs_job(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    """A rehearsal on a real job's ledger is refused: the simulator's answers would become the job's outcomes."""
    _, url = sim
    path = job(tmp_path, [*ROWS, ("rapyd", "r2")])
    first = await run_on(sim_config(url), path, tmp_path)
    assert first.exit_status == 0
    with pytest.raises(
        LedgerError, match="is a real run's: a rehearsal would record the simulator's answers"
    ):
        await run_on(sim_config(url), path, tmp_path, simulate=True)


@pytest.mark.parametrize(
    ("profile", "change", "old", "new"),
    [
        ("maple", {"company_id": "cmp_other"}, "company_id cmp_simulated", "company_id cmp_other"),
        (
            "rapyd",
            {"base_url": "http://127.0.0.2:9"},
            "rapyd at http://127.0.0.1",
            "rapyd at http://127.0.0.2:9",
        ),
    ],
)
async def test_a_changed_target_of_a_profile_with_sent_items_is_refused(
    sim: tuple[Simulator, str], tmp_path: Path, profile: str, change: dict[str, str], old: str, new: str
) -> None:
    """A profile now pointing at another account or base URL is refused naming it, old and new; the flag proceeds."""
    simulator, url = sim
    path = job(tmp_path, ROWS)
    config = sim_config(url)
    first = await run_on(config, path, tmp_path)
    assert first.exit_status == 0
    sent = sum(simulator.void_requests.values())
    moved = with_option(config, profile, **change)
    with pytest.raises(LedgerError) as refused:
        await run_on(moved, path, tmp_path)
    message = str(refused.value)
    assert f"profile {profile!r} of job 'job.csv'" in message
    assert old in message
    assert new in message
    assert "have outcomes at" in message
    assert "(1 voided)" in message
    assert "run the same command with --allow-target-change" in message
    assert "batchvoid report --ledger " in message
    assert "--job-id job.csv --state voided" in message
    assert "the same command with --job-id NEW_NAME" in message
    assert sum(simulator.void_requests.values()) == sent

    out = io.StringIO()
    allowed = await run_on(moved, path, tmp_path, allow_target_change=True, out=out)
    assert allowed.exit_status == 0
    assert f"warning: profile {profile!r}" in out.getvalue()
    again = await run_on(moved, path, tmp_path)  # the new target is now the recorded one
    assert again.exit_status == 0


async def test_a_changed_target_of_an_untouched_profile_is_taken_silently(
    sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    """A profile none of whose items was sent yet may change its account: nothing was sent to the old one."""
    simulator, url = sim
    path = job(tmp_path, ROWS)
    config = sim_config(url)
    simulator.revoke("maple")  # maple's items stay pending, never answered
    first = await run_on(config, path, tmp_path)
    assert first.exit_status == 3
    simulator.restore("maple")
    moved = with_option(config, "sellapp", store="other")
    with pytest.raises(LedgerError, match="profile 'sellapp'"):
        await run_on(moved, path, tmp_path)
    moved = with_option(config, "maple", company_id="cmp_other")
    out = io.StringIO()
    assert (await run_on(moved, path, tmp_path, out=out)).exit_status == 0
    assert "warning" not in out.getvalue()
    assert simulator.invoice_state("maple", "m1") == "void"


async def test_a_profile_redirected_and_then_fixed_is_resumed_with_retry_failed(tmp_path: Path) -> None:
    """Items failed by a redirect reached no account: the corrected base_url takes them with --retry-failed, and becomes the target."""
    redirecting = Simulator(SimulatorSettings.from_specs(["sellapp:redirect_to=https://sell.app/api"]))
    rows = [("sellapp", "s1"), ("sellapp", "s2"), ("maple", "m1")]
    path = job(tmp_path, rows)
    async with redirecting.serve() as wrong, Simulator(SimulatorSettings()).serve() as right:
        first = await run_on(sim_config(wrong), path, tmp_path)
        assert first.counts[("sellapp", ItemState.FAILED)] == 2
        assert all("HTTP 301: redirected to https://sell.app" in reason for _, _, reason in first.failures)
        fixed = with_option(sim_config(wrong), "sellapp", base_url=provider_url(right, "sellapp"))
        out = io.StringIO()
        again = await run_on(fixed, path, tmp_path, retry_failed=True, out=out)
        assert again.exit_status == 0
        assert again.counts[("sellapp", ItemState.VOIDED)] == 2
        assert "warning" not in out.getvalue()
        with pytest.raises(LedgerError, match=r"now sends to sellapp at http://127.*\(2 voided\)"):
            await run_on(sim_config(wrong), path, tmp_path)  # the fixed URL is the recorded target now


def test_the_rehearsal_keeps_its_own_ledger_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --simulate` writes rehearsal.sqlite, so the real run's default ledger starts the job afresh."""
    monkeypatch.chdir(tmp_path)
    path = job(tmp_path, ROWS)
    result = CliRunner().invoke(main, ["run", str(path), "--simulate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rehearsal.sqlite").exists()
    assert not (tmp_path / "batchvoid.sqlite").exists()
    plan = CliRunner().invoke(main, ["plan", str(path), "--simulate"])
    assert "in the ledger: the run resumes it" in plan.stdout


EXAMPLES = sorted(p.name for p in (REPO / "jobs").glob("example*.csv") if "oauth" not in p.name)


@pytest.mark.parametrize("example", EXAMPLES)
async def test_config_simulator_toml_runs_each_example_as_the_rehearsal_does(
    sim: tuple[Simulator, str], tmp_path: Path, example: str
) -> None:
    """The README's second way to rehearse: `batchvoid simulate` and `--config config/simulator.toml`
    give each example job the outcomes that `--simulate` gives it, every provider reached."""
    _, url = sim
    text = (REPO / "config" / "simulator.toml").read_text(encoding="utf-8")
    config = from_dict(tomllib.loads(text.replace("http://127.0.0.1:8089", url)), source="simulator.toml")
    path = REPO / "jobs" / example
    against = await run_on(config, path, tmp_path, ledger=tmp_path / "standalone.sqlite")
    rehearsed = await run_on(builtin(), path, tmp_path, ledger=tmp_path / "rehearsal.sqlite", simulate=True)
    assert against.exit_status == rehearsed.exit_status == 1  # each example has a paid or missing one
    assert dict(against.counts) == dict(rehearsed.counts)
    assert {provider for provider, state in against.counts if state is ItemState.VOIDED} == {
        provider for provider, _ in against.counts
    }
