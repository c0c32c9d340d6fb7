"""Configuration: every bad key, type, limit or missing credential is named before sending."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from batchvoid import config as configuration
from batchvoid.config import parse_rate_limit
from batchvoid.credentials import Credential
from batchvoid.errors import ConfigError
from batchvoid.models import RateLimit
from batchvoid.providers import REGISTRY
from tests.conftest import write

REPO = Path(__file__).resolve().parent.parent

GOOD = """
[defaults]
timeout_s = 5
max_attempts = 3

[providers.rapyd]
type = "rapyd"
rate_limits = ["200/60s", "1000/300s"]
concurrency = 2

[providers.maple_us]
type = "maple"
company_id = "cmp_us"
api_token_env = "MAPLE_US_TOKEN"
timeout_s = 2.5
"""


def test_profiles_take_defaults_and_overrides(tmp_path: Path) -> None:
    """A profile gets [defaults] unless it sets its own value; names map to types."""
    cfg = configuration.load(write(tmp_path / "c.toml", GOOD))
    rapyd, maple = cfg.profiles["rapyd"], cfg.profiles["maple_us"]
    assert rapyd.spec.type == "rapyd"
    assert rapyd.base_url == "https://sandboxapi.rapyd.net"
    assert rapyd.rate_limits == (RateLimit(200, 60.0, "200/60s"), RateLimit(1000, 300.0, "1000/300s"))
    assert (rapyd.settings.timeout_s, rapyd.settings.max_attempts, rapyd.settings.concurrency) == (5, 3, 2)
    assert (maple.settings.timeout_s, maple.settings.concurrency) == (2.5, 4)
    assert maple.credentials == {"api_token": Credential("api_token", "env", "MAPLE_US_TOKEN")}
    assert maple.options == {"company_id": "cmp_us"}


def test_shipped_example_configs_load() -> None:
    """config/providers.example.toml and config/simulator.toml are valid."""
    example = configuration.load(REPO / "config" / "providers.example.toml")
    assert {p.spec.type for p in example.profiles.values()} == set(REGISTRY)  # every provider shown
    assert str(example.profiles["rapyd"].rate_limits[1]) == "1000/300s"
    sim = configuration.load(REPO / "config" / "simulator.toml")
    assert all(p.base_url.startswith("http://127.0.0.1:8089") for p in sim.profiles.values())
    # every provider but the two whose refresh token file is the user's own (see its comment)
    assert {p.spec.type for p in sim.profiles.values()} == {t for t, s in REGISTRY.items() if s.oauth is None}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[providers.x]\ntype = "rapid"',
            r"c.toml: \[providers.x\]: type is 'rapid'; it must be one of: chargeover",
        ),
        ("[providers.x]\nbase_url = 'https://a'", r"\[providers.x\]: type is missing"),
        ('[providers.x]\ntype = ["a"]', r"c.toml: \[providers.x\]: type is \['a'\]; it must be one of"),
        ("[providers.x]\ntype = {a = 1}", r"c.toml: \[providers.x\]: type is \{'a': 1\}; it must be one"),
        (
            f'[providers.x]\ntype = "rapyd"\nrate_limits = ["1/{"9" * 400}s"]',
            r"\[providers.x\]: rate_limits: '1/9999.*\.\.\.: the period must be from 1ms to 24h",
        ),
        (
            '[providers.x]\ntype = "rapyd"\nrate_limits = ["1/25h"]',
            r"\[providers.x\]: rate_limits: '1/25h': the period must be from 1ms to 24h",
        ),
        (
            f'[providers.x]\ntype = "rapyd"\nrate_limits = ["{"9" * 5000}/1s"]',
            r"\[providers.x\]: rate_limits: '9999.*\.\.\.: the count must be at most 1,000,000",
        ),
        (
            '[providers.x]\ntype = "rapyd"\nacess_key_env = "A"',
            r"\[providers.x\]: unknown key 'acess_key_env'",
        ),
        (
            '[providers.x]\ntype = "rapyd"\nrate_limits = ["200 per minute"]',
            r"rate_limits: '200 per minute' is not",
        ),
        ('[providers.x]\ntype = "rapyd"\nrate_limits = "200/60s"', r"rate_limits must be a list"),
        (
            '[providers.x]\ntype = "rapyd"\nconcurrency = 0',
            r"concurrency must be a whole number from 1 to 512, got 0",
        ),
        ('[providers.x]\ntype = "rapyd"\ntimeout_s = "5"', r"timeout_s must be a number of seconds"),
        ('[providers.x]\ntype = "rapyd"\nmax_attempts = true', r"max_attempts must be a whole number"),
        ('[providers.x]\ntype = "chargeover"', r"base_url is required for ChargeOver"),
        (
            '[providers.x]\ntype = "rapyd"\nbase_url = "ftp://x"',
            r"base_url must be an http:// or https:// URL",
        ),
        ('[providers.x]\ntype = "maple"\ncompany_id = "acme"', r"company_id must start with 'cmp_'"),
        (
            '[providers.x]\ntype = "rapyd"\naccess_key_env = "not a var"',
            r"access_key_env must name an environment",
        ),
        ('[defaults]\nretries = 3\n[providers.x]\ntype = "rapyd"', r"\[defaults\]: unknown key 'retries'"),
        ("[provider.x]\ntype = 'rapyd'", r"top level: unknown key 'provider'"),
        ("[defaults]\n", r"no \[providers.NAME\] table"),
        ("[providers.x\n", r"not valid TOML"),
        ('[providers."bad name"]\ntype = "rapyd"', r"a provider name is letters"),
    ],
)
def test_bad_configuration_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    """Each kind of bad configuration is refused with the file, the table and the key."""
    with pytest.raises(ConfigError, match=message):
        configuration.load(write(tmp_path / "c.toml", text))


def test_missing_file_points_to_config_init(tmp_path: Path) -> None:
    """A missing configuration file says how to write one: a command a pip-installed user has."""
    with pytest.raises(
        ConfigError, match=r"no such configuration file \(`batchvoid config init .*nope.toml` writes"
    ):
        configuration.load(tmp_path / "nope.toml")


def test_missing_credential_names_variable_key_and_file(tmp_path: Path) -> None:
    """A credential variable that is not set is named with its config key and file."""
    cfg = configuration.load(write(tmp_path / "c.toml", GOOD))
    with pytest.raises(ConfigError) as caught:
        cfg.profiles["rapyd"].adapter({"RAPYD_ACCESS_KEY": "rak_live_value"})
    message = str(caught.value)
    assert "c.toml: [providers.rapyd] needs environment variable RAPYD_SECRET_KEY (secret_key_env)" in message
    assert "rak_live_value" not in message


def test_adapters_never_show_secrets_in_repr(tmp_path: Path) -> None:
    """An adapter's repr (as in a traceback) does not contain its credentials."""
    cfg = configuration.load(write(tmp_path / "c.toml", GOOD))
    adapter = cfg.profiles["rapyd"].adapter(
        {"RAPYD_ACCESS_KEY": "AK-123456", "RAPYD_SECRET_KEY": "SK-987654"}
    )
    assert "AK-123456" not in repr(adapter)
    assert "SK-987654" not in repr(adapter)


def test_fingerprint_ignores_limits_but_not_accounts(tmp_path: Path) -> None:
    """Changing a rate limit keeps the fingerprint; changing where a profile sends changes it."""
    base = configuration.load(write(tmp_path / "a.toml", GOOD)).fingerprint()
    slower = configuration.load(write(tmp_path / "b.toml", GOOD.replace('"200/60s", ', ""))).fingerprint()
    moved = configuration.load(write(tmp_path / "c.toml", GOOD.replace("cmp_us", "cmp_eu"))).fingerprint()
    assert base == slower
    assert base != moved


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("200/60s", 200, 60.0),
        ("5/s", 5, 1.0),
        ("1000/5m", 1000, 300.0),
        ("10/1h", 10, 3600.0),
        ("50 / 500ms", 50, 0.5),
        ("3/1.5s", 3, 1.5),
    ],
)
def test_rate_limit_strings(text: str, count: int, period: float) -> None:
    """Rate limits are COUNT/PERIOD with ms, s, m or h."""
    limit = parse_rate_limit(text)
    assert (limit.count, limit.period) == (count, period)


@pytest.mark.parametrize("text", ["", "0/1s", "5", "5/0s", "-1/s", "5/1d", "five/s", "5/1s/2"])
def test_bad_rate_limit_strings(text: str) -> None:
    """Anything that is not a positive COUNT/PERIOD is refused with the accepted forms."""
    with pytest.raises(ValueError, match=r"rate limit|above zero"):
        parse_rate_limit(text)


@given(count=st.integers(1, 10**6), amount=st.integers(1, 10**4), unit=st.sampled_from(["ms", "s", "m", "h"]))
def test_rate_limit_round_trip(count: int, amount: int, unit: str) -> None:
    """Any well-formed limit of a window up to 24 h parses to the count and period it says."""
    assume(amount * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit] <= 86400)
    limit = parse_rate_limit(f"{count}/{amount}{unit}")
    assert limit.count == count
    assert limit.period == pytest.approx(amount * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[providers.x]\ntype = "rapyd"\nacess_key_env = "A"', "did you mean 'access_key_env'?"),
        ('[providers.x]\ntype = "rapyd"\nconcurency = 2', "did you mean 'concurrency'?"),
        ('[defaults]\ntimeout = 3\n[providers.x]\ntype = "rapyd"', "did you mean 'timeout_s'?"),
        ('[provider.x]\ntype = "rapyd"', "did you mean 'providers'?"),
    ],
)
def test_a_misspelt_key_gets_did_you_mean(tmp_path: Path, text: str, message: str) -> None:
    """An unknown key close to a known one is answered with the known one, as provider names are."""
    with pytest.raises(ConfigError) as caught:
        configuration.load(write(tmp_path / "c.toml", text))
    assert str(caught.value).endswith(message)


def test_an_unknown_key_far_from_any_gets_no_guess(tmp_path: Path) -> None:
    """A key like nothing known lists the allowed keys and guesses nothing."""
    with pytest.raises(ConfigError) as caught:
        configuration.load(write(tmp_path / "c.toml", '[providers.x]\ntype = "rapyd"\nzzz = 1'))
    assert "did you mean" not in str(caught.value)
