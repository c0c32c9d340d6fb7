"""Networks as they are: proxies from the environment, NO_PROXY, loopback, CA bundles, the User-Agent."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import sqlite3
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from batchvoid import __version__
from batchvoid import config as configuration
from batchvoid.cli import main
from batchvoid.config import Config
from batchvoid.errors import ConfigError
from batchvoid.models import ItemState
from batchvoid.network import bypassed, proxy_for, route, shown_url
from batchvoid.simulator import Simulator, SimulatorSettings
from tests.conftest import job, run_on, sim_config, write
from tests.proxy import forward_proxy

PROXY_USER, PROXY_PASSWORD = "ops", "pr0xy-s3cret"
MADE_UP = "http://billing.example.test"  # resolves nowhere: only the proxy knows where it is
ROWS = [
    ("chargeover", "inv_1"),
    ("rapyd", "inv_2"),
    ("campfire", "inv_3"),
    ("maple", "inv_4"),
    ("sellapp", "inv_5"),
]


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the proxy variables it means; none leak in from the machine running the suite."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def with_credentials(proxy_url: str) -> str:
    return proxy_url.replace("http://", f"http://{PROXY_USER}:{PROXY_PASSWORD}@")


def final_states(tmp_path: Path) -> dict[str, str]:
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    try:
        return dict(db.execute("SELECT invoice_id, state FROM items").fetchall())
    finally:
        db.close()


# -- choosing a proxy ----------------------------------------------------------------------


def test_the_proxy_comes_from_the_variable_for_the_urls_scheme() -> None:
    """HTTPS_PROXY for https://, HTTP_PROXY for http://, a lower-case name first; none set: direct."""
    env = {"HTTPS_PROXY": "http://secure:3128", "HTTP_PROXY": "http://plain:3128"}
    assert proxy_for("https://api.rapyd.net", env) == ("HTTPS_PROXY", "http://secure:3128")
    assert proxy_for("http://billing.example.test", env) == ("HTTP_PROXY", "http://plain:3128")
    assert proxy_for("https://api.rapyd.net", {"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:1"}) == (
        "https_proxy",
        "http://a:1",
    )
    assert proxy_for("https://api.rapyd.net", {"HTTPS_PROXY": "http://b:1", "https_proxy": ""}) is None
    assert proxy_for("https://api.rapyd.net", {"HTTP_PROXY": "http://plain:3128"}) is None
    assert route("https://api.rapyd.net", env={}).proxy is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "localhost", "[::1]"])
def test_this_machine_never_goes_through_a_proxy(host: str) -> None:
    """Loopback (the simulator) is direct even with a proxy set and no NO_PROXY."""
    env = {"HTTP_PROXY": "http://proxy:3128", "HTTPS_PROXY": "http://proxy:3128"}
    assert proxy_for(f"http://{host}:8089", env) is None
    assert proxy_for(f"https://{host}:8089", env) is None


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("api.rapyd.net", 443, "rapyd.net", True),
        ("api.rapyd.net", 443, ".rapyd.net", True),
        ("rapyd.net", 443, "rapyd.net", True),
        ("evilrapyd.net", 443, "rapyd.net", False),
        ("api.rapyd.net", 443, "sell.app, rapyd.net", True),
        ("api.rapyd.net", 443, "*", True),
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("11.1.2.3", 443, "10.0.0.0/8", False),
        ("billing.internal", 8443, "billing.internal:8443", True),
        ("billing.internal", 443, "billing.internal:8443", False),
        ("api.rapyd.net", 443, "", False),
        ("::1", 8443, "[::1]:8443", True),
        ("fd00::5", 443, "fd00::/8", True),
        ("fd00::5", 443, "fd00::5", True),
    ],
)
def test_no_proxy_reads_as_curl_reads_it(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    """NO_PROXY: names cover their subdomains, a leading dot is the same, '*', CIDR ranges, :port."""
    assert bypassed(host, port, no_proxy) is bypass
    env = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy}
    if host != "::1":  # this machine is direct whatever NO_PROXY says
        at = f"[{host}]" if ":" in host else host
        assert (proxy_for(f"https://{at}:{port}", env) is None) is bypass
        if port == 443:  # the scheme's port when the URL names none
            assert (proxy_for(f"https://{at}", env) is None) is bypass


def test_a_proxy_url_keeps_its_credentials_out_of_sight() -> None:
    """The route's proxy address has no user:password (they go in Proxy-Authorization), and neither has an error."""
    chosen = route("https://api.rapyd.net", env={"HTTPS_PROXY": "http://ops:p%40ss@proxy.corp:3128"})
    assert (chosen.proxy, chosen.proxy_user, chosen.proxy_password) == (
        "http://proxy.corp:3128",
        "ops",
        "p@ss",
    )
    assert "p@ss" not in repr(chosen)
    assert (
        route("https://x.example", env={"HTTPS_PROXY": "proxy.corp:3128"}).proxy == "http://proxy.corp:3128"
    )
    with pytest.raises(ConfigError, match=re.escape("HTTPS_PROXY is socks5://...@proxy:1080")) as raised:
        route("https://x.example", env={"HTTPS_PROXY": "socks5://ops:hunter2@proxy:1080"})
    assert "hunter2" not in str(raised.value)
    assert shown_url("http://ops:hunter2@proxy:3128/") == "http://...@proxy:3128/"


# -- a proxy on loopback that sees the requests ------------------------------------------------


@pytest.mark.anyio
async def test_a_run_goes_through_http_proxy_to_a_host_only_the_proxy_knows(
    sim: tuple[Simulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY carries every request, with Proxy-Authorization and the versioned User-Agent; its password is never shown."""
    simulator, sim_url = sim
    async with forward_proxy(sim_url) as proxy:
        monkeypatch.setenv("HTTP_PROXY", with_credentials(proxy.url))
        out = io.StringIO()
        report = await run_on(sim_config(MADE_UP, max_attempts=1), job(tmp_path, ROWS), tmp_path, out=out)
    assert set(final_states(tmp_path).values()) == {ItemState.VOIDED.value}
    assert sum(simulator.voids_applied.values()) == len(ROWS)
    assert len(proxy.seen) == report.requests == len(ROWS)
    pair = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    for seen in proxy.seen:
        assert seen.target.startswith(MADE_UP + "/"), seen.target
        assert seen.headers["proxy-authorization"] == f"Basic {pair}"
        assert seen.headers["user-agent"] == f"batchvoid/{__version__}"
    log = (tmp_path / "job.csv.log").read_text()
    started = next(json.loads(line) for line in log.splitlines() if '"run.started"' in line)
    assert set(started["proxies"].values()) == {proxy.url}
    for text in (log, out.getvalue()):
        assert PROXY_PASSWORD not in text
        assert pair not in text


@pytest.mark.anyio
async def test_a_proxy_echoing_its_credentials_is_scrubbed(
    sim: tuple[Simulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy's error page that lists the request headers leaves no form of the proxy's password in the ledger or log."""
    _, sim_url = sim
    pair = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    page = (
        f"<html><body>Bad Gateway. Proxy-Authorization: Basic {pair}; user {PROXY_USER}, "
        f"password {PROXY_PASSWORD}</body></html>"
    ).encode()
    async with forward_proxy(sim_url) as proxy:
        proxy.answer = (
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nConnection: close\r\n"
            + f"Content-Length: {len(page)}\r\n\r\n".encode()
            + page
        )
        monkeypatch.setenv("HTTP_PROXY", with_credentials(proxy.url))
        await run_on(sim_config(MADE_UP, max_attempts=1), job(tmp_path, ROWS[:1]), tmp_path)
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    try:
        (reason,) = db.execute("SELECT reason FROM items").fetchone()
    finally:
        db.close()
    assert "[redacted]" in reason
    log = (tmp_path / "job.csv.log").read_text()
    for text in (reason, log):
        assert PROXY_PASSWORD not in text
        assert pair not in text


PROXY_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=corp\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_refusing_its_credentials_stops_the_lanes_with_their_items_pending(
    sim: tuple[Simulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    """A 407 (to a request, or to the CONNECT of an https:// one) stops each lane once, naming the proxy and the variable; nothing fails."""
    simulator, sim_url = sim
    variable = f"{scheme.upper()}_PROXY"
    async with forward_proxy(sim_url) as proxy:
        proxy.answer = PROXY_407
        monkeypatch.setenv(variable, with_credentials(proxy.url))
        config = sim_config(f"{scheme}://billing.example.test", max_attempts=5)
        report = await run_on(config, job(tmp_path, ROWS), tmp_path)
    assert set(final_states(tmp_path).values()) == {ItemState.PENDING.value}
    assert sum(simulator.void_requests.values()) == 0
    assert len(proxy.seen) == len(ROWS)  # one try per lane: no retries against a proxy that says no
    assert report.requests == 0  # a 407 is the proxy's answer: nothing was sent to a provider
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    try:
        assert db.execute("SELECT sum(attempts) FROM items").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM attempts").fetchone() == (0,)
    finally:
        db.close()
    assert '"void.attempt"' not in (tmp_path / "job.csv.log").read_text()
    assert len(report.stopped) == len(ROWS)
    for reason in report.stopped:
        assert f"the proxy {proxy.url} refused the user and password from {variable} (HTTP 407" in reason
        assert f"Set the proxy's user:password in {variable}" in reason
        assert "or add the provider's host to NO_PROXY" in reason
        assert PROXY_PASSWORD not in reason


@pytest.mark.anyio
async def test_a_proxy_refusing_a_status_lookup_stops_the_lane_and_counts_only_the_void(
    sim: tuple[Simulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rapyd's void goes through and its status lookup gets a 407: the lane stops, the item stays pending, one request counts."""
    simulator, sim_url = sim
    async with forward_proxy(sim_url) as proxy:
        proxy.answer, proxy.answer_only = PROXY_407, "GET"  # the lookup is Rapyd's one GET
        monkeypatch.setenv("HTTP_PROXY", with_credentials(proxy.url))
        report = await run_on(sim_config(MADE_UP), job(tmp_path, [("rapyd", "void_1")]), tmp_path)
    assert [seen.method for seen in proxy.seen] == ["POST", "GET"]
    assert sum(simulator.void_requests.values()) == 1
    assert final_states(tmp_path) == {"void_1": ItemState.PENDING.value}
    assert report.requests == 1
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    try:
        assert db.execute("SELECT attempts FROM items").fetchone() == (1,)
    finally:
        db.close()
    (reason,) = report.stopped
    assert f"the proxy {proxy.url} refused the user and password from HTTP_PROXY (HTTP 407" in reason


@pytest.mark.anyio
async def test_the_simulator_is_reached_directly_whatever_proxy_is_set(
    sim: tuple[Simulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY and HTTPS_PROXY set and no NO_PROXY, a run on loopback sends nothing to the proxy."""
    _, sim_url = sim
    async with forward_proxy(sim_url) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        await run_on(sim_config(sim_url, max_attempts=1), job(tmp_path, ROWS), tmp_path)
    assert set(final_states(tmp_path).values()) == {ItemState.VOIDED.value}
    assert proxy.seen == []


def test_a_rehearsal_works_behind_a_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --simulate` with a proxy set that cannot be reached still voids every item: loopback is direct."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: nothing listens
    write(tmp_path / "job.csv", "provider,invoice_id\n" + "".join(f"{p},{i}\n" for p, i in ROWS))
    result = CliRunner().invoke(main, ["run", "job.csv", "--simulate", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "5 items finished" in result.stdout


def test_an_unusable_proxy_variable_stops_the_run_before_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY=socks5://... is exit 2 for run and plan, naming the variable without its password; nothing is sent."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HTTPS_PROXY", "socks5://ops:hunter2@proxy.corp:1080")
    monkeypatch.setenv("CAMPFIRE_API_KEY", "key")
    write(tmp_path / "batchvoid.toml", '[providers.campfire]\ntype = "campfire"\n')
    write(tmp_path / "job.csv", "provider,invoice_id\ncampfire,inv_1\n")
    planned = CliRunner().invoke(main, ["plan", "job.csv"])
    assert planned.exit_code == 2, planned.output
    assert "cannot run: environment variable HTTPS_PROXY is socks5://...@proxy.corp:1080" in planned.stderr
    result = CliRunner().invoke(main, ["run", "job.csv"])
    assert result.exit_code == 2, result.output
    assert "error: environment variable HTTPS_PROXY is socks5://...@proxy.corp:1080" in result.stderr
    for output in (planned.output, result.output):
        assert "hunter2" not in output
    with contextlib.closing(sqlite3.connect(tmp_path / "batchvoid.sqlite")) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)  # refused: no job recorded


# -- TLS: ca_bundle and SSL_CERT_FILE --------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem), made by openssl."""
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=batchvoid test CA",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:billing.example.test",
            "-keyout", str(where / "key.pem"), "-out", str(where / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return where / "cert.pem", where / "key.pem"


@pytest.fixture
async def tls_sim(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """The simulator served over https:// on loopback with the self-signed certificate, and the
    headers of every request it got (inside TLS), names in lower case."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    simulator = Simulator(SimulatorSettings())
    seen: list[dict[str, str]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return await handler(request)

    simulator.app.middlewares.append(record)
    runner = web.AppRunner(simulator.app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        yield f"https://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


@pytest.mark.anyio
async def test_https_goes_through_the_proxy_by_connect_with_its_credentials_outside_the_tunnel(
    tls_sim: tuple[str, list[dict[str, str]]],
    certificate: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY: one CONNECT to the made-up host carries Proxy-Authorization; no request inside TLS carries it."""
    (url, inside), (cert, _) = tls_sim, certificate
    async with forward_proxy(url) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", with_credentials(proxy.url))
        config = trusting(sim_config("https://billing.example.test", max_attempts=1), str(cert))
        await run_on(config, job(tmp_path, ROWS), tmp_path)
    assert set(final_states(tmp_path).values()) == {ItemState.VOIDED.value}
    assert proxy.seen
    assert {seen.method for seen in proxy.seen} == {"CONNECT"}
    pair = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    for seen in proxy.seen:
        assert seen.target == "billing.example.test:443"
        assert seen.headers["proxy-authorization"] == f"Basic {pair}"
    assert len(inside) == len(ROWS)
    for headers in inside:
        assert "proxy-authorization" not in headers
        assert headers["user-agent"] == f"batchvoid/{__version__}"


def trusting(config: Config, ca_bundle: str | None) -> Config:
    profiles = {name: replace(p, ca_bundle=ca_bundle) for name, p in config.profiles.items()}
    return replace(config, profiles=profiles)


@pytest.mark.anyio
async def test_ca_bundle_is_what_an_https_provider_is_checked_against(
    tls_sim: tuple[str, list[dict[str, str]]], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    """A provider with a private CA: with its ca_bundle every void goes through; without, TLS refuses it."""
    (url, _), (cert, _) = tls_sim, certificate
    await run_on(trusting(sim_config(url, max_attempts=1), str(cert)), job(tmp_path, ROWS), tmp_path)
    assert set(final_states(tmp_path).values()) == {ItemState.VOIDED.value}

    other = tmp_path / "untrusted"
    other.mkdir()
    await run_on(sim_config(url, max_attempts=1), job(other, ROWS[:1]), other)
    db = sqlite3.connect(other / "ledger.sqlite")
    try:
        (state, reason) = db.execute("SELECT state, reason FROM items").fetchone()
    finally:
        db.close()
    assert state == ItemState.FAILED.value
    assert "certificate" in reason.lower()


@pytest.mark.anyio
async def test_ssl_cert_file_is_respected(
    tls_sim: tuple[str, list[dict[str, str]]],
    certificate: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SSL_CERT_FILE replaces the system's CA store for profiles without a ca_bundle of their own."""
    (url, _), (cert, _) = tls_sim, certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    await run_on(sim_config(url, max_attempts=1), job(tmp_path, ROWS), tmp_path)
    assert set(final_states(tmp_path).values()) == {ItemState.VOIDED.value}


def test_ca_bundle_is_checked_when_the_configuration_is_read(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    """A missing file, a directory or a file without PEM certificates is a ConfigError naming file, profile and key."""
    cert, _ = certificate
    not_pem = write(tmp_path / "bundle.pem", "not a certificate\n")
    for bundle, why in (
        (tmp_path / "missing.pem", "No such file"),
        (tmp_path, "is a directory"),
        (not_pem, "holds no PEM certificate"),
    ):
        path = write(tmp_path / "c.toml", f'[providers.rapyd]\ntype = "rapyd"\nca_bundle = "{bundle}"\n')
        with pytest.raises(ConfigError) as raised:
            configuration.load(path)
        assert f"{path}: [providers.rapyd]: ca_bundle {bundle}" in str(raised.value)
        assert why in str(raised.value)
    good = write(
        tmp_path / "good.toml",
        f'[defaults]\nca_bundle = "{cert}"\n[providers.rapyd]\ntype = "rapyd"\n'
        f'[providers.maple]\ntype = "maple"\ncompany_id = "cmp_1"\nca_bundle = "{not_pem.parent / "x"}"\n',
    )
    with pytest.raises(ConfigError, match=r"\[providers.maple\]: ca_bundle"):
        configuration.load(good)
    good.write_text(f'[defaults]\nca_bundle = "{cert}"\n[providers.rapyd]\ntype = "rapyd"\n')
    assert configuration.load(good).profiles["rapyd"].ca_bundle == str(cert)


def test_a_bad_ca_bundle_is_exit_2_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan` and `run` with a ca_bundle that is not there: exit 2, one error line naming the file, profile and key."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "batchvoid.toml",
        '[providers.campfire]\ntype = "campfire"\nca_bundle = "/nowhere/ca.pem"\n',
    )
    write(tmp_path / "job.csv", "provider,invoice_id\ncampfire,inv_1\n")
    for command in ("plan", "run"):
        result = CliRunner().invoke(main, [command, "job.csv"])
        assert result.exit_code == 2, result.output
        assert (
            "batchvoid.toml: [providers.campfire]: ca_bundle /nowhere/ca.pem: cannot read it" in result.stderr
        )
