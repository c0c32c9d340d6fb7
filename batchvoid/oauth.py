"""OAuth 2.0 connections that outlive their access tokens (Xero, QuickBooks Online).

A connection is an app's client id and secret (credentials like any other: a variable, a file
or a command) plus a refresh token that batchvoid keeps in the file the profile names
(`refresh_token_file`). An access token lives 30 minutes (Xero) or an hour (QuickBooks), so a
run refreshes it before it expires, and every refresh hands back a new refresh token (Xero
replaces it on every use; Intuit may). The order is what keeps the connection alive:

1. take the connection's lock (one refresh at a time in this run, and a `flock` beside the file
   so that two runs sharing the file never refresh with the same token);
2. read the refresh token from the file (another run may have rotated it);
3. send the refresh, shielded from cancellation;
4. write the new refresh token to a temporary file (0600), fsync it, rename it over the file,
   fsync the directory;
5. only then let requests use the new access token.

A crash before step 4 leaves the old refresh token in the file: the one the provider last saw
used, which Xero accepts again for 30 minutes precisely so that a lost answer does not lose the
connection. A crash after step 4 leaves the new one. A refused refresh (`invalid_grant`,
`invalid_client`) stops the lane, saying how to authorise again. Refresh requests go to the
token endpoint, not the API, so they count against no rate window of the lane.

No token is ever logged, shown or stored anywhere but the refresh token file: each request
declares the connection's secrets, so the transport scrubs them out of whatever comes back.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import anyio

from batchvoid.errors import ConfigError, os_cause
from batchvoid.models import Request, Response
from batchvoid.network import DIRECT, Route
from batchvoid.providers.facts import OAuthFacts

MAX_MARGIN_S = 300.0  # refresh this long before an access token expires, at most ...
MARGIN_SHARE = 0.25  # ... and at most this share of its lifetime (the simulator's are seconds long)
REFRESH_TRIES = 5  # a token endpoint that fails this often in a row stops the lane (items stay pending)
REFRESH_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # between those tries
_REFUSED = frozenset({400, 401, 403})  # the grant or the client was refused: trying again cannot help


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    """A profile's connection: where its refresh token lives and where it is refreshed."""

    refresh_token_file: str  # absolute path
    token_url: str


class AccessToken(Protocol):
    """What an adapter's requests carry: the current access token, and what to scrub."""

    @property
    def access_token(self) -> str: ...

    @property
    def secrets(self) -> tuple[str, ...]: ...


class TokenStore(Protocol):
    """Where a connection's refresh token is kept between refreshes and runs."""

    label: str  # what a person checks: the file's path

    def check(self, where: str) -> None:
        """Raise ConfigError, saying what to do, when the store cannot be read and rewritten."""
        ...

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use for one refresh, across processes where the store is shared."""
        ...

    def read(self, where: str) -> str: ...

    def write(self, token: str) -> None:
        """Replace the token durably and atomically; OSError when it cannot."""
        ...


class RefreshTokenFile:
    """A refresh token in a file of its own, rewritten by write-fsync-rename, mode 0600."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def check(self, where: str) -> None:
        self.read(where)
        directory = self.path.parent
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{where}: refresh_token_file {self.path} is in {directory}, where this user may not "
                "write: batchvoid replaces the file on every token refresh (the provider issues a new "
                "refresh token each time), so the directory must be writable. Fix its permissions or "
                "move the file"
            )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, and when the process dies
            yield
        finally:
            os.close(fd)

    def read(self, where: str) -> str:
        start = f"{where}: refresh_token_file {self.path}"
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"{start} does not exist: authorise batchvoid first (README: 'Authorising Xero and "
                "QuickBooks'), then write the refresh token it gives to that file, readable only by "
                'this user: umask 077; printf %s "$REFRESH_TOKEN" > ' + str(self.path)
            ) from None
        except IsADirectoryError:
            raise ConfigError(f"{start} is a directory: name the file that holds the token") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{start} is not UTF-8 text (its content is not shown)") from None
        except OSError as exc:
            raise ConfigError(
                f"{start} cannot be read ({exc.strerror}): run as the user that owns it"
            ) from exc
        token = text.strip()
        if not token:
            raise ConfigError(
                f"{start} is empty: authorise batchvoid again (README: 'Authorising Xero and "
                "QuickBooks') and write the new refresh token there"
            )
        if not usable_token(token):
            raise ConfigError(
                f"{start} holds more than one token, or a control character (not shown): write the "
                "refresh token alone, on one line"
            )
        return token

    def write(self, token: str) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a stale temporary file of an earlier pid may have had another mode
            data = (token + "\n").encode()
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)


class MemoryStore:
    """A refresh token kept in memory: a rehearsal's, whose simulator forgets it when it ends."""

    label = "the rehearsal's in-memory connection"

    def __init__(self, token: str) -> None:
        self.token = token

    def check(self, where: str) -> None:
        return None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        yield

    def read(self, where: str) -> str:
        return self.token

    def write(self, token: str) -> None:
        self.token = token


def usable_token(token: str) -> bool:
    """Whether `token` can go into a header and a one-line file: printable, no spaces."""
    return bool(token) and token.isprintable() and not any(char.isspace() for char in token)


def refresh_margin(lifetime_s: float) -> float:
    """How long before an access token's expiry it is refreshed."""
    return min(MAX_MARGIN_S, lifetime_s * MARGIN_SHARE)


def refresh_request(token_url: str, client_id: str, client_secret: str, refresh_token: str) -> Request:
    """The refresh (RFC 6749 section 6): Basic client credentials, a form body with the token."""
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    body = urlencode({"grant_type": "refresh_token", "refresh_token": refresh_token}).encode()
    return Request(
        "POST",
        token_url,
        {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
        body,
        secrets=(client_secret, refresh_token),
    )


@dataclass(frozen=True, slots=True)
class Grant:
    """A token endpoint's yes: a new access token, and the refresh token to keep (maybe the same)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """A token endpoint's no, in its own words (`error`, `error_description`): never a token."""

    reason: str
    final: bool  # True: the grant or client was refused; False: try again later (5xx, 429, no answer)
    client: bool = False  # the client id or secret, rather than the refresh token, was refused


def parse_grant(response: Response, refresh_token: str, default_lifetime_s: float) -> Grant | Refusal:
    """Judge a token endpoint's answer to `refresh_request(..., refresh_token)`."""
    from batchvoid.providers.base import json_body  # the adapters' shared reader; no cycle at import

    body = json_body(response)
    fields: dict[str, Any] = body if isinstance(body, dict) else {}
    if response.status == 200:
        access = fields.get("access_token")
        rotated = fields.get("refresh_token", refresh_token)
        if not (isinstance(access, str) and usable_token(access)):
            return Refusal("HTTP 200 without a usable access_token", final=False)
        if not (isinstance(rotated, str) and usable_token(rotated)):
            return Refusal("HTTP 200 with an unusable refresh_token", final=False)
        expires = fields.get("expires_in")
        lifetime = _seconds(expires, default_lifetime_s)
        return Grant(access, rotated, lifetime)
    error, description = fields.get("error"), fields.get("error_description")
    words = ": ".join(str(part) for part in (error, description) if part)
    if not words:
        words = response.body[:200].decode("utf-8", "replace").strip() or "no body"
    reason = f"HTTP {response.status}: {' '.join(words.split())[:300]}"
    if response.status in _REFUSED:
        client = error in ("invalid_client", "unauthorized_client") or response.status == 401
        return Refusal(reason, final=True, client=client)
    return Refusal(reason, final=False)


def _seconds(value: object, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return default
    try:
        seconds = float(value)
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds > 0 else default


class ConnectionLost(Exception):
    """The connection cannot give an access token now: the lane stops, its items stay pending.

    `reauthorize` is True when the provider refused the grant or the client (a person must act),
    False when the token endpoint could not be reached or the new refresh token not saved.
    """

    def __init__(self, message: str, *, reauthorize: bool) -> None:
        super().__init__(message)
        self.reauthorize = reauthorize


Send = Callable[[Request, Route], Awaitable[Response]]  # the transport's `send`, bound to a session


class Connection:
    """One OAuth 2.0 connection: its current access token, refreshed before it expires.

    Shared by every lane whose profile names the same refresh token file (one Xero connection
    can reach several tenants). `ready` gives a usable access token's generation, refreshing
    first when the token is due; `rejected` says whether a 401 is worth one more try with a
    fresh token. `clock` is `time.monotonic` in a run, a fake clock in tests.
    """

    def __init__(
        self,
        *,
        title: str,
        where: str,
        facts: OAuthFacts,
        token_url: str,
        client_id: str,
        client_secret: str,
        store: TokenStore,
        credentials: str,  # the variables (files, commands) of the client id and secret, for messages
        route: Route = DIRECT,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.title = title
        self.where = where
        self.facts = facts
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self.store = store
        self.credentials = credentials
        self.route = route
        self.timeout_s = timeout_s
        self._clock = clock
        self._sleep = sleep
        self._access = ""
        self._refresh_at = -math.inf  # on `clock`: when the current access token is due for refresh
        self.generation = 0  # access tokens issued in this run
        self.refreshes = 0
        self._forced = False  # the current token came from a refresh that a 401 forced
        self._lock: anyio.Lock | None = None  # made in the running loop, on first use
        self._lost: ConnectionLost | None = None  # once lost, lost for the run: no more refreshes

    @property
    def client(self) -> tuple[str, str]:
        """The token endpoint and the app's client id: what profiles sharing the connection share."""
        return (self.token_url, self._client_id)

    @property
    def access_token(self) -> str:
        """The current access token; only after `ready`."""
        if not self._access:
            raise RuntimeError("no access token yet: await ready() first")
        return self._access

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every value a request of this connection must have scrubbed out of its answer."""
        return tuple(value for value in (self._access, self._client_secret) if value)

    def due(self) -> bool:
        return self._clock() >= self._refresh_at

    async def ready(self, send: Send) -> int:
        """The generation of an access token that is good for a while yet; refreshes when due.

        Raises ConnectionLost when no token can be had. One refresh at a time: the others wait
        for it and use its token.
        """
        if not self.due():
            return self.generation
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._lost is not None:
                raise self._lost
            if self.due():  # no other worker refreshed while this one waited
                try:
                    await self._refresh(send)
                except ConnectionLost as exc:
                    self._lost = exc
                    raise
        return self.generation

    def rejected(self, generation: int) -> bool:
        """A request made with `generation`'s token got a 401: is a fresh token worth a try?

        Yes when a newer token exists already, when this one did not come from a refresh that an
        earlier 401 forced, or when it is due (a request in flight as it expired); then the next
        `ready` refreshes. No when even a forced fresh token was refused: the connection itself is.
        """
        if generation != self.generation:
            return True
        if self._forced and not self.due():
            return False
        self._forced = True
        self._refresh_at = -math.inf
        return True

    async def _refresh(self, send: Send) -> None:
        forced = self._forced and self._refresh_at == -math.inf and self.generation > 0
        last: Refusal | None = None
        for attempt in range(REFRESH_TRIES):
            if attempt:
                await self._sleep(REFRESH_BACKOFF_S[min(attempt, len(REFRESH_BACKOFF_S)) - 1])
            # Shielded: a second Ctrl-C must not fall between the provider issuing a new
            # refresh token and the file holding it. The request's own timeout bounds it.
            with anyio.CancelScope(shield=True):
                outcome = await self._refresh_once(send)
            if isinstance(outcome, Grant):
                self._access = outcome.access_token
                self._refresh_at = self._clock() + outcome.expires_in - refresh_margin(outcome.expires_in)
                self.generation += 1
                self.refreshes += 1
                self._forced = forced
                return
            last = outcome
            if outcome.final:
                raise ConnectionLost(self._refused(outcome), reauthorize=True)
        assert last is not None
        raise ConnectionLost(
            f"{self.title}'s token endpoint {self.token_url} answered {last.reason} to "
            f"{REFRESH_TRIES} token refreshes in a row, so there is no access token to send with "
            "(nothing was sent with an expired one). Run the same command again later; the "
            f"connection in {self.store.label} is unchanged",
            reauthorize=False,
        )

    async def _refresh_once(self, send: Send) -> Grant | Refusal:
        from batchvoid.transport import TransportError  # the one module that knows aiohttp

        async with _held(self.store):
            old = await anyio.to_thread.run_sync(self.store.read, self.where)
            request = refresh_request(self.token_url, self._client_id, self._client_secret, old)
            try:
                response = await send(request, self.route)
            except TransportError as exc:
                return Refusal(f"no answer ({exc})", final=False)
            outcome = parse_grant(response, old, self.facts.access_lifetime_s)
            if isinstance(outcome, Grant) and outcome.refresh_token != old:
                try:
                    await anyio.to_thread.run_sync(self.store.write, outcome.refresh_token)
                except OSError as exc:
                    raise ConnectionLost(
                        f"{self.title} issued a new refresh token, but it could not be saved to "
                        f"{self.store.label} ({os_cause(exc)}), so the new access token is not used. "
                        f"{self.facts.grace or 'The file still holds the previous refresh token'}: "
                        "fix the cause, then run the same command again",
                        reauthorize=False,
                    ) from exc
            return outcome

    def _refused(self, refusal: Refusal) -> str:
        if refusal.client:
            return (
                f"{self.title} refused the app's client id and secret when refreshing the access "
                f"token ({refusal.reason}): check {self.credentials} (the app's OAuth 2.0 "
                "credentials), then run the same command again"
            )
        return (
            f"{self.title} refused the refresh token in {self.store.label} ({refusal.reason}): the "
            "connection was disconnected, or the token expired unused or was used by another "
            f"program. Authorise batchvoid again ({self.facts.authorize}), write the new refresh "
            f"token to {self.store.label}, then run the same command again"
        )


@contextlib.asynccontextmanager
async def _held(store: TokenStore) -> Any:
    """`store.locked()` entered and left in a worker thread (flock blocks)."""
    lock = store.locked()
    await anyio.to_thread.run_sync(lock.__enter__)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lock.__exit__, None, None, None)
