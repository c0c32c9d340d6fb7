"""Credential values are checked before anything is sent: trimmed with a notice, or refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid import config as configuration
from batchvoid.cli import main
from batchvoid.errors import ConfigError
from batchvoid.simulator import CREDENTIALS, PROVIDER_TYPES
from tests.conftest import write
from tests.served import served, set_credentials

ACCESS_KEY = CREDENTIALS["rapyd"]["access_key"]
# A second Rapyd account reading the same variables: the notice still comes once.
SECOND_RAPYD = '\n[providers.rapyd_eu]\ntype = "rapyd"\nbase_url = "{url}"\nrate_limits = []\n'


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def job(tmp_path: Path) -> str:
    rows = [(p, f"{p}_{n}") for p in (*PROVIDER_TYPES, "rapyd_eu") for n in (1, 2)]
    return str(write(tmp_path / "job.csv", "provider,invoice_id\n" + "".join(f"{p},{i}\n" for p, i in rows)))


def config(tmp_path: Path, url: str) -> str:
    path = tmp_path / "batchvoid.toml"
    served_config = path.read_text() if path.exists() else ""
    path.write_text(served_config + SECOND_RAPYD.format(url=url))
    return str(path)


@pytest.mark.parametrize("value", [ACCESS_KEY + "\r", ACCESS_KEY + "\r\n", f"\ufeff {ACCESS_KEY}\n"])
def test_whitespace_around_a_credential_is_trimmed_with_one_notice(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A CRLF line end (or a BOM, a newline) around RAPYD_ACCESS_KEY: run and plan go on, saying so once, never showing it."""
    set_credentials(monkeypatch, RAPYD_ACCESS_KEY=value)
    with served() as sim:
        sim.config(tmp_path / "batchvoid.toml")
        cfg = config(tmp_path, sim.url)
        plan = runner.invoke(main, ["plan", job(tmp_path), "--config", cfg])
        result = runner.invoke(main, ["run", job(tmp_path), "--config", cfg])
        sent = [h["access_key"] for h in sim.requests if "access_key" in h]
    assert plan.exit_code == 0, plan.output
    assert "Runnable" in plan.stdout
    assert plan.stderr.count("RAPYD_ACCESS_KEY") == 1
    assert "warning: environment variable RAPYD_ACCESS_KEY has whitespace around its value" in plan.stderr
    assert result.exit_code == 0, result.output
    assert result.stderr.count("RAPYD_ACCESS_KEY") == 1
    assert "warning: environment variable RAPYD_ACCESS_KEY has whitespace around its value" in result.stderr
    assert "Traceback" not in result.output
    assert sent == [ACCESS_KEY] * 4  # trimmed: both Rapyd accounts, two items each
    for output in (plan.output, result.output):
        assert ACCESS_KEY not in output


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("rak_SIMU\x01LATOR", "a control character (U+0001)"),
        ("rak_SIMU\nLATOR", "a line feed (U+000A)"),
        ("rak_SIMU\r\nLATOR\r\n", "a carriage return (U+000D)"),
        ("rak_SIMU\tLATOR", "a tab (U+0009)"),
        ("rak_SIMU\u200bLATOR", "a control character (U+200B)"),
    ],
)
@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_control_character_inside_a_credential_is_exit_2_naming_the_variable(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, named: str, command: str
) -> None:
    """A control character inside RAPYD_ACCESS_KEY: run and plan exit 2 naming the variable, not the value; nothing is sent."""
    set_credentials(monkeypatch, RAPYD_ACCESS_KEY=value)
    with served() as sim:
        sim.config(tmp_path / "batchvoid.toml")
        result = runner.invoke(main, [command, job(tmp_path), "--config", config(tmp_path, sim.url)])
        requests = sim.simulator.stats()["totals"]["requests"]
    assert result.exit_code == 2, result.output
    message = f"environment variable RAPYD_ACCESS_KEY (access_key_env) has {named} inside its value"
    if command == "run":
        assert result.stderr.startswith("error: ")
        assert message in result.stderr
    else:
        assert "cannot run" in result.stderr
        assert message in " ".join(result.stderr.split())
    assert requests == 0
    assert "Traceback" not in result.output
    for part in ("rak_SIMU", "LATOR"):
        assert part not in result.output


def test_secrets_trim_and_report_each_variable_once(tmp_path: Path) -> None:
    """Profile.secrets trims each value and adds one notice per variable, however many profiles read it."""
    cfg = configuration.load(
        write(tmp_path / "c.toml", '[providers.a]\ntype = "maple"\n[providers.b]\ntype = "maple"\n')
    )
    notices: list[str] = []
    env = {"MAPLE_API_TOKEN": " tok\r\n"}
    assert cfg.profiles["a"].secrets(env, notices) == {"api_token": "tok"}
    assert cfg.profiles["b"].secrets(env, notices) == {"api_token": "tok"}
    assert len(notices) == 1
    assert "MAPLE_API_TOKEN" in notices[0]
    assert "tok" not in notices[0]
    assert cfg.profiles["a"].secrets({"MAPLE_API_TOKEN": "tok"}, notices) == {"api_token": "tok"}
    assert len(notices) == 1
    with pytest.raises(ConfigError, match=r"MAPLE_API_TOKEN \(api_token_env\) has a line feed"):
        cfg.profiles["a"].adapter({"MAPLE_API_TOKEN": "t\nok"})
    with pytest.raises(ConfigError, match="needs environment variable MAPLE_API_TOKEN"):
        cfg.profiles["a"].adapter({"MAPLE_API_TOKEN": " \r\n"})
