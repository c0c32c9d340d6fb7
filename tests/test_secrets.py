"""No credential leaves the process: the transport scrubs every form of it out of every answer."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from batchvoid.cli import main
from batchvoid.models import Item, Request, Response
from batchvoid.providers import REGISTRY, Adapter, maxio
from batchvoid.simulator import (
    ACCOUNTS,
    CREDENTIALS,
    PROVIDER_TYPES,
    Simulator,
    SimulatorSettings,
    provider_url,
)
from batchvoid.simulator.credentials import REFRESH_TOKENS
from batchvoid.transport import REDACTED, Secrets, TransportError, send
from tests.served import served, set_credentials

KEY = "bv1-" + "0" * 48
# Distinct, recognisable values for every credential role of every provider type.
FAKE = {
    "username": "pub_4f1c9e2a",
    "password": 'pr"iv<&>/+=é',
    "access_key": "rak_live_8d3f2b71",
    "secret_key": "rsk_live_0c6a94e5",
    "api_key": "key_live_5b7e1d30",
    "api_token": "tok_live_9a2c4f68",
    "client_id": "cid_live_3e8a5c07",
    "client_secret": "cse_live_7d1b6f92",
}


# The profile settings every provider's rows need (Maple's company, Maxio's void reason).
OPTIONS = {"company_id": "cmp_simulated", "void_reason": "duplicate invoice"}


def basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def scrubbed(request: Request, text: str) -> str:
    return Secrets.of(request).scrub(text.encode()).decode()


def test_every_form_of_a_credential_is_scrubbed() -> None:
    """Raw, JSON- and HTML-escaped, percent-encoded, the Basic pair in base64, decoded and each half: each alone is redacted."""
    user, password = FAKE["username"], FAKE["password"]
    request = Request(
        "POST",
        "https://x/void",
        {"Authorization": "Basic " + basic(user, password)},
        secrets=("sig_1a2b3c4d",),
    )
    for echo in (
        basic(user, password),
        f"{user}:{password}",
        user,
        password,
        json.dumps(password)[1:-1],
        json.dumps(password)[1:-1].replace("/", "\\/"),  # PHP's json_encode
        json.dumps(password, ensure_ascii=False)[1:-1],
        html.escape(password),
        quote(password, safe=""),
        "sig_1a2b3c4d",
    ):
        assert scrubbed(request, f"Invalid credentials: {echo} (see the docs)") == (
            f"Invalid credentials: {REDACTED} (see the docs)"
        ), echo
    bearer = Request("GET", "https://x", {"authorization": "Bearer tok_live_9a2c4f68"})
    assert scrubbed(bearer, '{"detail":"bad token tok_live_9a2c4f68"}') == '{"detail":"bad token [redacted]"}'


def test_overlapping_and_adjacent_secrets_leave_no_part() -> None:
    """Two secrets that overlap or touch in the text become one [redacted], with nothing of either left over."""
    request = Request("POST", "https://x", {}, secrets=("abc123xyz", "xyz789def", "QQQ"))
    assert scrubbed(request, "<abc123xyz789def>") == "<[redacted]>"
    assert scrubbed(request, "<abc123xyzQQQ> QQQ.") == "<[redacted]> [redacted]."


@given(
    secrets=st.lists(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=12
        ),
        min_size=1,
        max_size=3,
    ),
    pieces=st.lists(st.text(max_size=8), max_size=6),
)
def test_no_part_of_any_occurrence_survives(secrets: list[str], pieces: list[str]) -> None:
    """Whatever the secrets and the text around them, overlapping or adjacent, no occurrence survives the scrub."""
    text = "".join(p + s for p, s in zip(pieces + [""] * len(secrets), secrets * 3, strict=False))
    request = Request("POST", "https://x", {}, secrets=tuple(secrets))
    result = scrubbed(request, text).replace(REDACTED, "\0")
    for secret in secrets:
        assert secret not in result


@dataclass(frozen=True)
class _Token:
    """An OAuth 2.0 connection's access token, as an adapter sees it."""

    access_token: str
    secrets: tuple[str, ...]


def adapter_of(provider: str, base_url: str, roles: dict[str, str], token: str) -> Adapter:
    """The provider's adapter; an OAuth 2.0 one carries `token` (its secrets: it and the client's)."""
    spec = REGISTRY[provider]
    options = {**OPTIONS, **ACCOUNTS.get(provider, {})}
    if spec.connect is not None:
        return spec.connect(base_url, _Token(token, (token, roles["client_secret"])), options)
    return spec.build(base_url, roles, options)


def first_requests(adapter: Adapter, item: Item) -> Iterable[Request]:
    """The void (after a read that tells it what it needs), its read and any status lookup."""
    if (read := adapter.read_request(item)) is not None and REGISTRY[item.provider].requests_per_item > 1:
        yield read  # QuickBooks: the read comes first, and gives the SyncToken
        told = adapter.parse_read(item, Response(200, {}, b'{"Invoice": {"Id": "inv_1", "SyncToken": "3"}}'))
        assert isinstance(told, Item)
        item = told
    yield adapter.void_request(item, KEY)
    for read in (adapter.lookup_request(item), adapter.read_request(item)):
        if read is not None:
            yield read


def requests_of(provider: str) -> Iterable[Request]:
    spec = REGISTRY[provider]
    roles = {key.removesuffix("_env"): FAKE[key.removesuffix("_env")] for key in spec.credentials}
    adapter = adapter_of(provider, "https://provider.example", roles, "at_" + FAKE["client_secret"][::-1])
    yield from first_requests(adapter, Item(1, provider, "inv_1", void_date="2026-11-30"))


@pytest.mark.parametrize("provider", list(REGISTRY))
def test_every_adapter_request_names_every_credential_it_carries(provider: str) -> None:
    """A page echoing each header of an adapter's requests, and each credential, keeps the names and none of the values."""
    # An OAuth 2.0 app's client id is public (it is in the authorisation link); no API request carries it.
    roles = [key.removesuffix("_env") for key in REGISTRY[provider].credentials]
    credentials = [FAKE[role] for role in roles if role != "client_id"]
    for request in requests_of(provider):
        carried = [
            v for k, v in request.headers.items() if k.lower() in ("authorization", "access_key", "signature")
        ]
        assert carried, "the request carries no credential header: the test proves nothing"
        page = "<pre>" + "\n".join(f"{k}: {v}" for k, v in request.headers.items()) + "</pre>"
        result = scrubbed(request, page + " ".join(credentials))
        for value in [*credentials, *(v.partition(" ")[2] or v for v in carried)]:
            assert value not in result, (provider, value)
        for name in request.headers:
            assert f"{name}: " in result


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def real_request(provider: str, base_url: str, simulator: Simulator) -> Request:
    """The first request of a void, with the simulator's credentials (a valid access token)."""
    token = simulator.access_token(provider) if REGISTRY[provider].oauth else ""
    adapter = adapter_of(provider, provider_url(base_url, provider), dict(CREDENTIALS[provider]), token)
    return next(iter(first_requests(adapter, Item(1, provider, "inv_1", void_date="2026-11-30"))))


def all_forms(provider: str, request: Request) -> list[str]:
    values = [*CREDENTIALS[provider].values(), *request.secrets]
    if provider == "chargeover":
        values.append(basic(*CREDENTIALS["chargeover"].values()))
    if provider in ("stripe", "recurly", "chargebee"):  # the key as a Basic username, with an empty password
        values.append(basic(next(iter(CREDENTIALS[provider].values())), ""))
    if provider == "maxio":  # the key as a Basic username, with the documented password "x"
        values.append(basic(CREDENTIALS["maxio"]["api_key"], maxio.PASSWORD))
    return values


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDER_TYPES)
async def test_send_scrubs_a_401_that_quotes_the_key(provider: str) -> None:
    """Through `send`, a 401 body quoting the presented key reaches the adapter as [redacted]."""
    simulator = Simulator(SimulatorSettings.from_specs(["echo_credentials=true"]))
    async with simulator.serve() as url, aiohttp.ClientSession() as session:
        request = real_request(provider, url, simulator)
        simulator.revoke(provider)
        response = await send(session, request, 5)
    assert response.status == 401
    body = response.body.decode()
    assert REDACTED in body
    for value in all_forms(provider, request):
        assert value not in body


@pytest.mark.anyio
async def test_send_scrubs_a_gateway_page_listing_the_headers() -> None:
    """Through `send`, a gateway 502/503 page that lists the request headers keeps none of the credential values."""
    simulator = Simulator(SimulatorSettings.from_specs(["error_rate=1,echo_headers=true"], seed=2))
    async with simulator.serve() as url, aiohttp.ClientSession() as session:
        for provider in PROVIDER_TYPES:
            request = real_request(provider, url, simulator)
            response = await send(session, request, 5)
            assert response.status in (502, 503)
            page = response.body.decode()
            assert "Host: 127.0.0.1" in page
            assert re.search(r"(Authorization|signature): [^\n]*\[redacted\]", page), page
            for value in all_forms(provider, request):
                assert value not in page


@pytest.fixture
async def echoing_server() -> AsyncIterator[str]:
    """A broken server whose answer repeats the Authorization line where a header should be, and as a header."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = next(x for x in head.split(b"\r\n") if x.lower().startswith(b"authorization:"))
        if b"/header" in head.split(b"\r\n")[0]:
            writer.write(b"HTTP/1.1 200 OK\r\nX-Debug-" + line + b"\r\nContent-Length: 0\r\n\r\n")
        else:  # a header line without its colon: aiohttp's parser error quotes the whole line
            writer.write(b"HTTP/1.1 200 OK\r\n" + line.replace(b": ", b" ") + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_transport_errors_and_response_headers_are_scrubbed(echoing_server: str) -> None:
    """A parser error that quotes the sent header, and a response header echoing it, both come out [redacted]."""
    token = CREDENTIALS["maple"]["api_token"]
    async with aiohttp.ClientSession() as session:
        request = Request(
            "POST", f"{echoing_server}/void", {"Authorization": f"Bearer {token}"}, secrets=(token,)
        )
        with pytest.raises(TransportError) as caught:
            await send(session, request, 5)
        assert "Authorization Bearer [redacted]" in str(caught.value)
        assert token not in str(caught.value)
        request = Request(
            "POST", f"{echoing_server}/header", {"Authorization": f"Bearer {token}"}, secrets=(token,)
        )
        response = await send(session, request, 5)
        assert response.headers["X-Debug-Authorization"] == "Bearer [redacted]"


# -- end to end: the CLI, a real configuration, a simulator that echoes everything ----------


def leaked(secrets: Iterable[str], blob: bytes) -> list[str]:
    """The secrets any 10-character stretch of which is in `blob`, even with whitespace wrapped."""
    flat = re.sub(rb"\s+", b"", blob)
    found = []
    for secret in {s for s in secrets if s}:
        compact = re.sub(r"\s+", "", secret)
        size = min(10, len(compact))
        windows = {compact[i : i + size].encode() for i in range(len(compact) - size + 1)}
        if any(w in blob or w in flat for w in windows):
            found.append(secret)
    return found


def sent_secrets(requests: list[dict[str, str]]) -> set[str]:
    """Every credential value any request carried: headers, Bearer and Token tokens, Basic decoded and split."""
    values = {v for roles in CREDENTIALS.values() for v in roles.values()}
    for headers in requests:
        for name, value in headers.items():
            if name.lower() in ("access_key", "signature", "salt"):
                values.add(value)
            elif name.lower() == "authorization":
                scheme, _, token = value.partition(" ")
                values |= {value, token}
                if scheme == "Basic":
                    pair = base64.b64decode(token).decode()
                    values |= {pair, *pair.split(":", 1)}
    return values - {maxio.PASSWORD}  # a documented constant, the same for every key


def test_no_echoed_credential_reaches_ledger_log_terminal_report_or_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """401s quoting the key and gateway pages listing the headers leave no credential in any output or file."""
    monkeypatch.chdir(tmp_path)
    set_credentials(monkeypatch)
    runner = CliRunner()
    job = tmp_path / "job.csv"
    job.write_text(
        "provider,invoice_id\n" + "".join(f"{p},inv_{n}\n" for p in PROVIDER_TYPES for n in (1, 2))
    )
    settings = SimulatorSettings.from_specs(["echo_credentials=true,echo_headers=true,error_rate=1"], seed=4)
    with served(settings) as sim:
        config = sim.config(tmp_path / "batchvoid.toml")
        for provider in PROVIDER_TYPES:
            sim.simulator.revoke(provider)
        first = runner.invoke(main, ["run", str(job), "--config", config])  # every key refused, and quoted
        assert first.exit_code == 3, first.output
        for provider in PROVIDER_TYPES:
            sim.simulator.restore(provider)
        second = runner.invoke(main, ["run", str(job), "--config", config])  # every answer a gateway page
        assert second.exit_code == 1, second.output
        stats = sim.simulator.stats()["totals"]
        requests = list(sim.requests)
    assert stats["auth_failed"] == len(PROVIDER_TYPES)
    assert stats["faults"]["error"] == 2 * len(PROVIDER_TYPES)
    shown = [first.stdout, first.stderr, second.stdout, second.stderr]
    for args in (
        ["report"],
        ["report", "--format", "jsonl"],
        ["status"],
        ["status", "--job-id", "job.csv"],
        ["status", "--job-id", "job.csv", "--json"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        shown += [result.stdout, result.stderr]
    files = [
        p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(("batchvoid.sqlite", "job.csv.log"))
    ]
    blob = b"\n".join([*(s.encode() for s in shown), *files])
    # The echoes did reach every output, scrubbed: else this test would prove nothing.
    for output in (first.stdout, second.stdout, second.stderr, shown[4]):
        assert REDACTED in output
    assert (tmp_path / "job.csv.log").read_text().count(REDACTED) >= 15
    # One refused (an OAuth 2.0 provider's refresh), then two gateway pages, per provider; and
    # each OAuth 2.0 provider's second run refreshed its access token first.
    oauth = [p for p in PROVIDER_TYPES if REGISTRY[p].oauth is not None]
    assert len(requests) == 3 * len(PROVIDER_TYPES) + len(oauth)
    assert "refresh token [redacted] of client Basic [redacted] is revoked" in first.stdout
    # The refresh tokens: the first one, and the one each run rotated into its file.
    refresh = {*REFRESH_TOKENS.values(), *(tmp_path.glob("*.refresh-token"))}
    tokens = {t if isinstance(t, str) else t.read_text().strip() for t in refresh}
    assert len(tokens) == 2 * len(oauth)
    assert leaked(sent_secrets(requests) | tokens, blob) == []
