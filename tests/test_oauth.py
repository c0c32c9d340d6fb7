"""OAuth 2.0 connections: the refresh request, the refresh token file, refresh before expiry, refusals."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from urllib.parse import parse_qs

import anyio
import orjson
import pytest

from batchvoid import oauth
from batchvoid.errors import ConfigError
from batchvoid.models import Request, Response
from batchvoid.network import Route
from batchvoid.oauth import (
    Connection,
    ConnectionLost,
    Grant,
    MemoryStore,
    OAuthFacts,
    RefreshTokenFile,
    Refusal,
    parse_grant,
    refresh_request,
)
from batchvoid.simulator.exchange import Incoming
from batchvoid.simulator.oauth import TokenIssuer
from tests.clock import FakeClock

pytestmark = pytest.mark.anyio

FACTS = OAuthFacts(
    token_url="https://identity.example/connect/token",
    access_lifetime_s=1800,
    authorize="README: 'Authorising Xero and QuickBooks'",
    grace="Xero accepts the previous refresh token again for 30 minutes",
)


def answer(status: int, payload: object) -> Response:
    return Response(status, {"Content-Type": "application/json"}, orjson.dumps(payload))


class TokenEndpoint:
    """A fake token endpoint on the fake clock: hands out rotated tokens, records every request."""

    def __init__(self, store: oauth.TokenStore | None = None, lifetime: float = 1800) -> None:
        self.requests: list[Request] = []
        self.answers: list[Response] = []  # queued answers; empty: a fresh grant
        self.store = store
        self.lifetime = lifetime
        self.file_at_send: list[str] = []

    async def __call__(self, request: Request, route: Route) -> Response:
        self.requests.append(request)
        if self.store is not None:
            self.file_at_send.append(self.store.read("test"))
        await anyio.lowlevel.checkpoint()
        if self.answers:
            return self.answers.pop(0)
        n = len(self.requests)
        return answer(200, {"access_token": f"at{n}", "refresh_token": f"rt{n}", "expires_in": self.lifetime})


def connection(store: oauth.TokenStore, clock: FakeClock, **kwargs: object) -> Connection:
    return Connection(
        title="Xero",
        where="batchvoid.toml: [providers.xero]",
        facts=FACTS,
        token_url=FACTS.token_url,
        client_id="client-id",
        client_secret="client-secret",
        store=store,
        credentials="XERO_CLIENT_ID, XERO_CLIENT_SECRET",
        clock=clock.now,
        sleep=clock.sleep,
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_refresh_request_is_basic_client_auth_and_a_form_body_declaring_its_secrets() -> None:
    """The refresh is POST token_url, Basic client_id:secret, a form body, the secrets declared for scrubbing."""
    request = refresh_request("https://identity.xero.com/connect/token", "cid", "c s/cret", "rt+1/=")
    assert request.method == "POST"
    assert request.url == "https://identity.xero.com/connect/token"
    assert request.headers == {
        "Authorization": "Basic " + base64.b64encode(b"cid:c s/cret").decode(),
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    }
    assert request.body is not None
    assert parse_qs(request.body.decode()) == {"grant_type": ["refresh_token"], "refresh_token": ["rt+1/="]}
    assert set(request.secrets) == {"c s/cret", "rt+1/="}


def test_a_grant_keeps_the_old_refresh_token_when_none_is_given_and_the_documented_lifetime() -> None:
    """A 200 without refresh_token keeps the old one (Intuit may not rotate); no expires_in: the documented lifetime."""
    grant = parse_grant(answer(200, {"access_token": "at"}), "old", 3600)
    assert grant == Grant("at", "old", 3600)
    grant = parse_grant(
        answer(200, {"access_token": "at", "refresh_token": "new", "expires_in": 1800}), "old", 1
    )
    assert grant == Grant("at", "new", 1800)


@pytest.mark.parametrize(
    ("response", "final", "client"),
    [
        (answer(400, {"error": "invalid_grant"}), True, False),
        (answer(401, {"error": "invalid_client"}), True, True),
        (answer(400, {"error": "unauthorized_client"}), True, True),
        (answer(503, {"error": "temporarily_unavailable"}), False, False),
        (answer(429, {}), False, False),
        (answer(200, {"access_token": "two words"}), False, False),
        (answer(200, {"refresh_token": "x"}), False, False),
    ],
)
def test_token_endpoint_refusals_say_whether_a_person_must_act(
    response: Response, final: bool, client: bool
) -> None:
    """invalid_grant and invalid_client are final (re-authorise, or fix the client); 5xx, 429, junk are not."""
    outcome = parse_grant(response, "old", 1800)
    assert isinstance(outcome, Refusal)
    assert (outcome.final, outcome.client) == (final, client)
    assert outcome.reason.startswith(f"HTTP {response.status}")


def test_the_file_is_rewritten_atomically_with_mode_0600(tmp_path: Path) -> None:
    """write() leaves only the new token, mode 0600 even if the file was 0644, and no temporary file."""
    path = tmp_path / "xero.token"
    path.write_text("old\n")
    path.chmod(0o644)
    store = RefreshTokenFile(path)
    store.write("new-token")
    assert path.read_text() == "new-token\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xero.token"]
    assert store.read("here") == "new-token"


def test_a_crash_before_the_rename_leaves_the_old_token_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the process dies between writing the new token and the rename, the file still holds the old one, whole."""
    path = tmp_path / "xero.token"
    path.write_text("old-token\n")

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        RefreshTokenFile(path).write("new-token")
    assert path.read_text() == "old-token\n"


def test_the_new_token_is_written_and_synced_before_the_rename_and_the_rename_synced_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write(): the data, then fsync of the temporary file, then the rename, then fsync of the
    directory; a power cut at any point leaves one whole token in the file's place."""
    path = tmp_path / "xero.token"
    path.write_text("old-token\n")
    events: list[str] = []
    real_write, real_fsync, real_replace = os.write, os.fsync, os.replace

    def write(fd: int, data: bytes) -> int:
        events.append("write")
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        # What a reader (or a crash) sees at the rename: the new token whole, on disk already.
        events.append(f"rename ({Path(src).read_text()!r} over {Path(dst).read_text()!r})")
        real_replace(src, dst)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    RefreshTokenFile(path).write("new-token")
    assert events == ["write", "fsync file", "rename ('new-token\\n' over 'old-token\\n')", "fsync dir"]
    assert path.read_text() == "new-token\n"


class WatchedStore(MemoryStore):
    """A store that notes, at each write, whether the connection already hands out the new token."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.conn: Connection | None = None
        self.seen: list[tuple[str, int, bool]] = []

    def write(self, token: str) -> None:
        assert self.conn is not None
        self.seen.append((token, self.conn.generation, self.conn.due()))
        super().write(token)


async def test_no_request_can_have_the_new_access_token_before_its_refresh_token_is_stored() -> None:
    """At the moment the rotated refresh token is written, the connection still hands out the old
    generation and is still due: the new access token is given out only after the write."""
    clock = FakeClock()
    store = WatchedStore("rt0")
    conn = store.conn = connection(store, clock)
    endpoint = TokenEndpoint()
    for generation in (1, 2, 3):
        assert await conn.ready(endpoint) == generation
        clock.advance(1800)
    assert store.seen == [("rt1", 0, True), ("rt2", 1, True), ("rt3", 2, True)]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "does not exist: authorise batchvoid first"),
        ("", "is empty: authorise batchvoid again"),
        ("rt1 rt2\n", "more than one token"),
    ],
)
def test_an_unusable_token_file_is_an_error_naming_it_and_saying_how_to_authorise(
    tmp_path: Path, content: str | None, says: str
) -> None:
    """A missing, empty or garbled refresh token file names the profile and the file, never the content."""
    path = tmp_path / "xero.token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as error:
        RefreshTokenFile(path).check("batchvoid.toml: [providers.xero]")
    message = str(error.value)
    assert message.startswith(f"batchvoid.toml: [providers.xero]: refresh_token_file {path}")
    assert says in message
    assert "rt1" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_token_file_in_a_directory_batchvoid_cannot_write_is_refused_before_the_run(tmp_path: Path) -> None:
    """The file is replaced on every refresh: a read-only directory is refused up front, not mid-run."""
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "xero.token").write_text("rt\n")
    directory.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="where this user may not write"):
            RefreshTokenFile(directory / "xero.token").check("here")
    finally:
        directory.chmod(0o700)


async def test_the_token_is_refreshed_before_it_expires_and_not_before_it_is_due() -> None:
    """The first ready() refreshes; the next ones reuse the token until its margin before expiry."""
    clock, store = FakeClock(), MemoryStore("rt0")
    endpoint = TokenEndpoint(lifetime=1800)
    conn = connection(store, clock)
    assert await conn.ready(endpoint) == 1
    assert conn.access_token == "at1"
    clock.advance(1800 - oauth.MAX_MARGIN_S - 1)
    assert await conn.ready(endpoint) == 1
    assert len(endpoint.requests) == 1
    clock.advance(1)
    assert await conn.ready(endpoint) == 2
    assert conn.access_token == "at2"
    assert store.token == "rt2"
    assert [parse_qs((r.body or b"").decode())["refresh_token"] for r in endpoint.requests] == [
        ["rt0"],
        ["rt1"],
    ]


async def test_many_workers_due_at_once_make_one_refresh() -> None:
    """Twenty workers that find the token due at once wait for one refresh and all use its token."""
    clock, store = FakeClock(), MemoryStore("rt0")
    endpoint = TokenEndpoint()
    conn = connection(store, clock)
    got: list[int] = []

    async def worker() -> None:
        got.append(await conn.ready(endpoint))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(worker)
    assert got == [1] * 20
    assert len(endpoint.requests) == 1


async def test_the_new_refresh_token_is_in_the_file_before_the_new_access_token_is_used(
    tmp_path: Path,
) -> None:
    """By the time ready() hands out a new access token, the file already holds the refresh token issued with it."""
    path = tmp_path / "xero.token"
    path.write_text("rt0\n")
    store = RefreshTokenFile(path)
    clock = FakeClock()
    endpoint = TokenEndpoint(store)
    conn = connection(store, clock)
    for expected in (1, 2, 3):
        await conn.ready(endpoint)
        assert conn.access_token == f"at{expected}"
        assert path.read_text() == f"rt{expected}\n"
        clock.advance(1800)
    assert endpoint.file_at_send == ["rt0", "rt1", "rt2"]  # each refresh sent the token the file held


async def test_an_unsaved_refresh_token_stops_the_lane_and_its_access_token_is_never_used(
    tmp_path: Path,
) -> None:
    """If the new refresh token cannot be written, ready() fails and the access token that came with it is not used."""
    directory = tmp_path / "d"
    directory.mkdir()
    path = directory / "xero.token"
    path.write_text("rt0\n")

    class Full(RefreshTokenFile):
        def write(self, token: str) -> None:
            raise OSError(28, "No space left on device")

    conn = connection(Full(path), FakeClock())
    with pytest.raises(ConnectionLost) as lost:
        await conn.ready(TokenEndpoint())
    assert not lost.value.reauthorize
    assert "could not be saved" in str(lost.value)
    assert "30 minutes" in str(lost.value)
    assert "free space" in str(lost.value)
    with pytest.raises(RuntimeError):
        conn.access_token  # noqa: B018 - reading it is the test
    assert path.read_text() == "rt0\n"


async def test_a_refused_refresh_token_says_how_to_authorise_again() -> None:
    """invalid_grant: ConnectionLost(reauthorize) naming the file and the README section, never a token."""
    endpoint = TokenEndpoint()
    endpoint.answers = [answer(400, {"error": "invalid_grant", "error_description": "expired rt0"})]
    conn = connection(MemoryStore("rt0"), FakeClock())
    with pytest.raises(ConnectionLost) as lost:
        await conn.ready(endpoint)
    message = str(lost.value)
    assert lost.value.reauthorize
    assert "refused the refresh token" in message
    assert "Authorise batchvoid again (README: 'Authorising Xero and QuickBooks')" in message
    assert len(endpoint.requests) == 1  # a refusal is not retried


async def test_a_refused_client_names_its_variables() -> None:
    """invalid_client: the message names the client id and secret's variables, not the refresh token file."""
    endpoint = TokenEndpoint()
    endpoint.answers = [answer(401, {"error": "invalid_client"})]
    with pytest.raises(ConnectionLost, match="check XERO_CLIENT_ID, XERO_CLIENT_SECRET"):
        await connection(MemoryStore("rt0"), FakeClock()).ready(endpoint)


async def test_a_failing_token_endpoint_is_retried_with_backoff_then_stops_the_lane() -> None:
    """5xx from the token endpoint: tried REFRESH_TRIES times with backoff on the clock, then ConnectionLost (not reauthorize)."""
    clock = FakeClock()
    endpoint = TokenEndpoint()
    endpoint.answers = [answer(503, {})] * oauth.REFRESH_TRIES
    with pytest.raises(ConnectionLost) as lost:
        await connection(MemoryStore("rt0"), clock).ready(endpoint)
    assert not lost.value.reauthorize
    assert f"{oauth.REFRESH_TRIES} token refreshes in a row" in str(lost.value)
    assert clock.slept == list(oauth.REFRESH_BACKOFF_S)

    endpoint = TokenEndpoint()
    endpoint.answers = [answer(503, {}), answer(502, {})]
    conn = connection(MemoryStore("rt0"), FakeClock())
    assert await conn.ready(endpoint) == 1
    assert conn.access_token == "at3"


async def test_a_401_forces_one_refresh_and_a_second_401_on_the_fresh_token_does_not() -> None:
    """rejected(): a stale generation retries; the current one refreshes once; refused again, the lane
    stops; a forced token's 401 once it is due is an expiry, and refreshes again."""
    clock = FakeClock()
    endpoint = TokenEndpoint()
    conn = connection(MemoryStore("rt0"), clock)
    first = await conn.ready(endpoint)
    assert conn.rejected(first)  # expired early, say: refresh
    second = await conn.ready(endpoint)
    assert second == first + 1
    assert conn.rejected(first)  # an older token's 401: the current one is worth a try
    assert await conn.ready(endpoint) == second  # ... without another refresh
    assert not conn.rejected(second)  # a token fresh from a forced refresh is refused: give up
    clock.advance(1800)
    third = await conn.ready(endpoint)  # a refresh on schedule starts afresh
    assert conn.rejected(third)
    fourth = await conn.ready(endpoint)  # forced
    clock.advance(1500)  # it served until due; a request in flight as it expired gets a 401
    assert conn.rejected(fourth)  # an expiry, not a refusal: refresh again
    assert await conn.ready(endpoint) == fourth + 1


async def test_two_connections_on_one_file_never_refresh_with_a_used_token(tmp_path: Path) -> None:
    """Two runs sharing the refresh token file: each refresh reads the file under its lock, so rotation holds."""
    path = tmp_path / "xero.token"
    path.write_text("sim_rt\n")
    issuer = TokenIssuer("client-id", "client-secret", "sim_rt", prefix="x", lifetime_s=60)

    async def send(request: Request, route: Route) -> Response:
        incoming = Incoming("POST", "/connect/token", request.headers, {}, request.body or b"", 0.0)
        got = issuer.refresh(incoming, 0.0)
        return Response(got.status, {}, got.body)

    one, two = (connection(RefreshTokenFile(path), FakeClock()) for _ in range(2))
    async with anyio.create_task_group() as tg:
        for conn in (one, two, one, two):
            tg.start_soon(conn.ready, send)
    assert one.generation == two.generation == 1
    assert issuer.refreshes == 2
    assert path.read_text().strip() == issuer.current_refresh_token()


def issued(
    issuer: TokenIssuer, token: str, wall: float, client: str = "client-id:client-secret"
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": "Basic " + base64.b64encode(client.encode()).decode()}
    body = f"grant_type=refresh_token&refresh_token={token}".encode()
    got = issuer.refresh(Incoming("POST", "/connect/token", headers, {}, body, wall), wall)
    return got.status, orjson.loads(got.body)


def test_the_simulated_endpoint_rotates_refresh_tokens_and_expires_access_tokens() -> None:
    """A used refresh token fails (after its grace); access tokens expire after token_lifetime_s; revoked: invalid_grant."""
    issuer = TokenIssuer("client-id", "client-secret", "rt0", prefix="x", lifetime_s=2, grace_s=5)
    status, first = issued(issuer, "rt0", 100)
    assert status == 200
    assert first["expires_in"] == 2
    assert issuer.valid(str(first["access_token"]), 101.9)
    assert not issuer.valid(str(first["access_token"]), 102)
    status, _ = issued(issuer, "rt0", 104)  # within the grace: a lost answer can be fetched again
    assert status == 200
    assert issued(issuer, "rt0", 106) == (
        400,
        {"error": "invalid_grant", "error_description": "The refresh token is invalid, expired or revoked"},
    )
    assert issued(issuer, str(first["refresh_token"]), 106)[0] == 200
    assert issued(issuer, "made-up", 106)[0] == 400
    assert issued(issuer, issuer.current_refresh_token(), 106, client="client-id:wrong")[0] == 401
    issuer.revoked = True
    assert issued(issuer, issuer.current_refresh_token(), 106)[1]["error"] == "invalid_grant"


async def test_a_lost_connection_stays_lost_for_every_worker_waiting_on_it() -> None:
    """Workers queued behind a refused refresh get the same ConnectionLost without sending refreshes of their own."""
    endpoint = TokenEndpoint()
    endpoint.answers = [answer(400, {"error": "invalid_grant"})] * 10
    conn = connection(MemoryStore("rt0"), FakeClock())
    lost: list[ConnectionLost] = []

    async def worker() -> None:
        try:
            await conn.ready(endpoint)
        except ConnectionLost as exc:
            lost.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(worker)
    assert len(lost) == 5
    assert len(endpoint.requests) == 1
