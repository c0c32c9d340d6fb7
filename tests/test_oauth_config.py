"""An OAuth 2.0 profile's configuration: its required keys, its documented in-flight limit, its
refresh token file checked before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid.cli import main
from batchvoid.config import load
from batchvoid.errors import ConfigError
from tests.conftest import job

XERO = 'type = "xero"\ntenant_id = "t-1"\nrefresh_token_file = "xero.token"\n'


def config(tmp_path: Path, table: str, defaults: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f"[defaults]\n{defaults}\n[providers.xero]\n{table}")
    return path


@pytest.mark.parametrize(
    ("table", "says"),
    [
        (
            'type = "xero"\ntenant_id = "t-1"\n',
            "[providers.xero]: refresh_token_file is required for Xero: the file where batchvoid keeps "
            "the connection's refresh token, which it replaces on every refresh (README: 'Authorising "
            "Xero and QuickBooks' says how to get the first one)",
        ),
        ('type = "xero"\nrefresh_token_file = "x"\n', "[providers.xero]: tenant_id is required for Xero: "),
        (
            XERO + "concurrency = 8\n",
            "[providers.xero]: concurrency = 8, but Xero takes at most 5 requests in flight per account "
            "(it queues, slows and then refuses more): set concurrency to 5 or less",
        ),
        (
            XERO + 'token_url = "http://identity.example/token"\n',
            "token_url 'http://identity.example/token' is plain http://",
        ),
        (
            XERO + 'token_url = "https://user:pw@identity.example/token"\n',
            "token_url must not carry a user or password",
        ),
    ],
)
def test_a_bad_oauth_profile_is_refused_naming_the_key(tmp_path: Path, table: str, says: str) -> None:
    """Each missing or bad OAuth key is a ConfigError that names the table and the key (and never a password)."""
    with pytest.raises(ConfigError) as caught:
        load(config(tmp_path, table))
    assert says in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_concurrency_from_defaults_is_held_to_the_documented_most(tmp_path: Path) -> None:
    """[defaults] concurrency = 8 gives Xero its documented 5 (and QuickBooks its 10), not an error."""
    profiles = load(config(tmp_path, XERO, "concurrency = 16")).profiles
    assert profiles["xero"].settings.concurrency == 5
    assert profiles["xero"].oauth is not None
    assert profiles["xero"].oauth.refresh_token_file == str(
        tmp_path / "xero.token"
    )  # from the config's directory


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "does not exist: authorise batchvoid first (README: 'Authorising Xero and QuickBooks')"),
        ("", "is empty: authorise batchvoid again"),
    ],
)
def test_run_and_plan_check_the_refresh_token_file_before_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, says: str
) -> None:
    """An unusable refresh token file is exit 2, naming the file, before any request (its content never shown)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XERO_CLIENT_ID", "cid")
    monkeypatch.setenv("XERO_CLIENT_SECRET", "cse")
    if content is not None:
        (tmp_path / "xero.token").write_text(content)
    path = config(tmp_path, XERO + 'base_url = "http://127.0.0.1:9"\ntoken_url = "http://127.0.0.1:9/t"\n')
    jobs = job(tmp_path, [("xero", "inv-1")])
    for command in ("run", "plan"):
        result = CliRunner().invoke(main, [command, str(jobs), "--config", str(path)])
        assert result.exit_code == 2, result.output
        assert f"refresh_token_file {tmp_path / 'xero.token'} {says}" in result.output


def test_two_profiles_on_one_refresh_token_file_must_be_one_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two tenants may share a connection's file, but not with another app's client id: exit 2, nothing sent."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XERO_CLIENT_ID", "cid")
    monkeypatch.setenv("XERO_CLIENT_SECRET", "cse")
    monkeypatch.setenv("OTHER_ID", "other")
    (tmp_path / "xero.token").write_text("rt0\n")
    local = 'base_url = "http://127.0.0.1:9"\ntoken_url = "http://127.0.0.1:9/t"\n'
    path = config(
        tmp_path,
        XERO
        + local
        + f'\n[providers.xero_b]\n{XERO.replace("t-1", "t-2")}{local}client_id_env = "OTHER_ID"\n',
    )
    jobs = job(tmp_path, [("xero", "inv-1"), ("xero_b", "inv-2")])
    result = CliRunner().invoke(main, ["run", str(jobs), "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert (
        "one refresh token belongs to one app's connection. Give each connection its own file"
        in result.output
    )


def test_config_check_names_the_refresh_token_file_without_reading_it(tmp_path: Path) -> None:
    """`config check` shows where each OAuth 2.0 connection's refresh token is kept; the file need not exist yet."""
    result = CliRunner().invoke(main, ["config", "check", "--config", str(config(tmp_path, XERO))])
    assert result.exit_code == 0, result.output
    assert (
        f"client_secret_env XERO_CLIENT_SECRET, refresh_token_file {tmp_path / 'xero.token'}" in result.stdout
    )
