"""Messages that point at the real cause: a skewed clock, a redirect, a base_url that is wrong."""

from __future__ import annotations

import email.utils
import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid import catalog
from batchvoid import config as configuration
from batchvoid.cli import main
from batchvoid.errors import ConfigError
from batchvoid.models import Item, Outcome, OutcomeKind, Response
from batchvoid.providers.base import transient
from batchvoid.providers.rapyd import Rapyd
from batchvoid.run import EXIT_STOPPED
from batchvoid.simulator import Simulator, SimulatorSettings
from tests.conftest import job, run_on, sim_config, write

UNAUTHENTICATED = {"status": {"error_code": "UNAUTHENTICATED_API_CALL", "status": "ERROR", "message": "x"}}
NOW = 1_700_000_000


def rapyd_401(date: str | None) -> Response:
    headers = {"Date": date} if date is not None else {}
    return Response(401, headers, json.dumps(UNAUTHENTICATED).encode())


# -- Rapyd and the clock -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (120.4, "this machine's clock is 120 s ahead of Rapyd's (its Date header), and Rapyd refuses"),
        (-95, "this machine's clock is 95 s behind Rapyd's (its Date header), and Rapyd refuses"),
        (-20, "this machine's clock is 20 s behind Rapyd's (its Date header): Rapyd allows 60 s"),
        (3, None),
    ],
)
def test_rapyd_401_names_the_clock_when_it_is_off_the_providers_date(
    offset: float, expected: str | None
) -> None:
    """A Rapyd 401 whose Date is more than 5 s off this machine's clock says so, and by how much; closer, it does not."""
    adapter = Rapyd("https://x", "a", "b", clock=lambda: NOW + offset)
    response = rapyd_401(email.utils.formatdate(NOW, usegmt=True))
    outcome = adapter.parse_void(Item(1, "rapyd", "i"), response)
    assert outcome.kind is OutcomeKind.AUTH_FAILED
    assert outcome.reason.startswith("HTTP 401: UNAUTHENTICATED_API_CALL: x")
    if expected is None:
        assert "clock" not in outcome.reason
    else:
        assert expected in outcome.reason
    rejected = Outcome(OutcomeKind.REJECTED, "first", 400, check_status=True)
    lookup = adapter.parse_lookup(Item(1, "rapyd", "i"), response, rejected)
    assert lookup.kind is OutcomeKind.AUTH_FAILED
    assert lookup.reason.startswith("status lookup: HTTP 401: UNAUTHENTICATED_API_CALL")
    if expected is None:
        assert "clock" not in lookup.reason
    else:
        assert expected in lookup.reason


@pytest.mark.parametrize("date", [None, "not a date", "Tue, 14 Nov 2023 22:13:20"])
def test_rapyd_401_without_a_usable_date_blames_nothing_else(date: str | None) -> None:
    """No Date header, an unreadable one or one without a zone: the 401's reason is the provider's alone."""
    adapter = Rapyd("https://x", "a", "b", clock=lambda: NOW + 500)
    outcome = adapter.parse_void(Item(1, "rapyd", "i"), rapyd_401(date))
    assert outcome.reason == "HTTP 401: UNAUTHENTICATED_API_CALL: x"


@pytest.mark.anyio
async def test_a_skewed_clock_stops_rapyd_naming_the_clock_and_the_offset(tmp_path: Path) -> None:
    """Against a Rapyd whose clock is 120 s ahead, the run stops Rapyd with the clock and the measured offset named."""
    simulator = Simulator(SimulatorSettings.from_specs(["rapyd:clock_skew_s=120"]))
    path = job(tmp_path, [(p, f"c{n}") for n in range(3) for p in ("rapyd", "maple")])
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, concurrency=1), path, tmp_path)
    assert report.exit_status == EXIT_STOPPED
    (stopped,) = report.stopped
    assert stopped.startswith(
        "rapyd: the provider refused the credentials (HTTP 401: UNAUTHENTICATED_API_CALL"
    )
    assert re.search(r"this machine's clock is 1(19|20|21) s behind Rapyd's \(its Date header\)", stopped)
    assert "set this machine's clock right (NTP) before suspecting the keys" in stopped
    assert simulator.stats()["maple"]["voided"] == 3


# -- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "where"),
    [
        ("https://other.example.com/v1/x?y=1", "https://other.example.com"),
        ("https://admin:hunter2@other.example.com:8443/login", "https://other.example.com:8443"),
        ("http://[2001:db8::1]/a", "http://[2001:db8::1]"),
        ("/login?next=/void", "/login on the same host"),
        (None, "nowhere (no Location header)"),
    ],
)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_names_where_it_points(status: int, location: str | None, where: str) -> None:
    """A 3xx is a rejection naming the Location's scheme and host (never a user or password), and says it is not followed."""
    headers = {"Location": location} if location is not None else {}
    outcome = transient(Response(status, headers, b"<html>Moved</html>"), "unused")
    assert outcome == Outcome(
        OutcomeKind.REJECTED,
        f"HTTP {status}: redirected to {where}; batchvoid does not follow redirects: check base_url",
        status,
    )
    assert "hunter2" not in outcome.reason
    assert "admin" not in outcome.reason


@pytest.mark.anyio
async def test_a_redirecting_provider_fails_its_items_naming_the_host_without_following(
    tmp_path: Path,
) -> None:
    """A provider that answers 301 elsewhere: each item is sent once, fails naming the host, and the lane stops."""
    simulator = Simulator(
        SimulatorSettings.from_specs(["sellapp:redirect_to=https://billing.example.com/api"])
    )
    path = job(tmp_path, [("sellapp", f"r{n}") for n in range(6)] + [("maple", "m1")])
    async with simulator.serve() as url:
        report = await run_on(sim_config(url, concurrency=1, stop_after_rejections=3), path, tmp_path)
    reason = "HTTP 301: redirected to https://billing.example.com; batchvoid does not follow redirects: check base_url"
    assert report.exit_status == EXIT_STOPPED
    (stopped,) = report.stopped
    assert stopped.startswith(f"sellapp: 3 items in a row were rejected, the last with {reason!r}")
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    failed = db.execute("SELECT DISTINCT reason FROM items WHERE state = 'failed'").fetchall()
    assert failed == [(reason,)]
    stats = simulator.stats()["sellapp"]
    assert stats["requests"] == stats["redirected"] == 3
    assert simulator.stats()["maple"]["voided"] == 1


# -- base_url ----------------------------------------------------------------------------------


def profile(tmp_path: Path, body: str) -> configuration.Config:
    return configuration.load(write(tmp_path / "c.toml", f'[providers.co]\ntype = "chargeover"\n{body}\n'))


@pytest.mark.parametrize(
    ("base_url", "shown"),
    [
        ("https://admin:s3cr3t-pw@acme.chargeover.com", "https://...@acme.chargeover.com"),
        ("https://admin:s3cr3t@pw@acme.chargeover.com/api", "https://...@acme.chargeover.com/api"),
        ("http://admin:s3cr3t-pw@127.0.0.1:8089", "http://...@127.0.0.1:8089"),
        ("admin:s3cr3t-pw@acme.chargeover.com", "https://...@acme.chargeover.com"),
        ("ftp://admin:s3cr3t-pw@acme.chargeover.com", "https://...@acme.chargeover.com"),
    ],
)
def test_a_base_url_with_user_and_password_is_refused_without_showing_them(
    tmp_path: Path, base_url: str, shown: str
) -> None:
    """base_url with user:password@ is a config error naming the host; neither the user nor the password is shown."""
    with pytest.raises(ConfigError) as caught:
        profile(tmp_path, f'base_url = "{base_url}"')
    message = str(caught.value)
    assert f"[providers.co]: base_url must not carry a user or password ({shown})" in message
    assert "credentials come only from the environment variables" in message
    for part in ("s3cr3t", "admin"):
        assert part not in message


@pytest.mark.parametrize("command", ["run", "plan"])
def test_the_cli_refuses_a_base_url_with_a_password_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """run and plan exit 2 with one error line for a base_url with user:password@, no traceback, no password."""
    monkeypatch.chdir(tmp_path)
    cfg = write(
        tmp_path / "c.toml", '[providers.co]\ntype = "chargeover"\nbase_url = "https://u:pw-9x7@h.example"\n'
    )
    jobs = write(tmp_path / "j.csv", "provider,invoice_id\nco,1\n")
    result = CliRunner().invoke(main, [command, str(jobs), "--config", str(cfg)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "base_url must not carry a user or password (https://...@h.example)" in result.stderr
    assert "pw-9x7" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8089",
        "http://127.3.2.1",
        "http://[::1]:8089/api",
        "http://localhost:8089",
        "http://LOCALHOST",
        "https://acme.chargeover.com",
    ],
)
def test_http_to_this_machine_and_https_anywhere_are_allowed(tmp_path: Path, base_url: str) -> None:
    """Loopback (127.0.0.0/8, ::1, localhost) may be plain http://; anything may be https://."""
    assert profile(tmp_path, f'base_url = "{base_url}"').profiles["co"].base_url == base_url.rstrip("/")


@pytest.mark.parametrize("base_url", ["http://acme.chargeover.com", "http://10.0.0.5:8080", "http://[::2]"])
def test_plain_http_to_another_machine_is_refused_unless_the_profile_allows_it(
    tmp_path: Path, base_url: str
) -> None:
    """http:// to anything but loopback is a config error saying why and how to allow it; allow_insecure_http = true allows it."""
    with pytest.raises(ConfigError) as caught:
        profile(tmp_path, f'base_url = "{base_url}"')
    message = str(caught.value)
    assert f"base_url {base_url!r} is plain http:// to " in message
    assert "the credentials would travel in clear text" in message
    assert "set allow_insecure_http = true in this profile" in message
    allowed = profile(tmp_path, f'base_url = "{base_url}"\nallow_insecure_http = true')
    assert allowed.profiles["co"].base_url == base_url
    with pytest.raises(ConfigError, match="allow_insecure_http must be true or false, got 'yes'"):
        profile(tmp_path, f'base_url = "{base_url}"\nallow_insecure_http = "yes"')


@pytest.mark.parametrize(
    "base_url",
    ["http://[::1", "https://acme.example:99999", "https://acme.example:port", "https://ac me.example"],
)
def test_an_unreadable_base_url_is_a_config_error(tmp_path: Path, base_url: str) -> None:
    """A base_url whose host or port cannot be read, or with a space in it, is a config error, never a traceback."""
    with pytest.raises(ConfigError, match=r"base_url must be an http:// or https:// URL, got "):
        profile(tmp_path, f'base_url = "{base_url}"')


def test_a_control_character_in_a_profile_option_is_a_config_error(tmp_path: Path) -> None:
    """A store (sent as X-STORE) with a control character is refused by name, not a traceback inside a lane."""
    with pytest.raises(ConfigError, match=r"\[providers.s\]: store has a line feed \(U\+000A\) in it"):
        configuration.load(
            write(tmp_path / "c.toml", '[providers.s]\ntype = "sellapp"\nstore = "my\\nshop"\n')
        )


def test_the_catalog_lists_allow_insecure_http() -> None:
    """`batchvoid providers` names allow_insecure_http among the keys every profile takes."""
    assert "allow_insecure_http" in catalog.catalog()["common_keys"]
    assert re.search(r"^  allow_insecure_http +true lets base_url be http://", catalog.text(), re.MULTILINE)
