"""A simulated OAuth 2.0 token endpoint: short-lived access tokens and rotating refresh tokens.

It plays the worst case the providers document. Every refresh issues a new access token and a
new refresh token, and the refresh token just used stops working (Xero replaces it on every
use; Intuit may), except for `grace_s` seconds after its first use: Xero's 30 minutes, in
which a client that lost the answer may use it again. Access tokens expire `lifetime_s` after
they were issued (fault `token_lifetime_s`, so a test goes through many lifetimes in seconds).
A revoked connection (fault `revoke_after`, `/_sim/revoke`) answers `invalid_grant`, as a
disconnected app does. Sans-IO: `refresh` takes the request and its wall time.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from batchvoid.simulator.exchange import Answer, Incoming, json_answer
from batchvoid.simulator.stats import Tally


def _error(status: int, error: str, description: str) -> Answer:
    tally = Tally.AUTH_FAILED
    return json_answer(status, {"error": error, "error_description": description}, tally)


_BAD_CLIENT = _error(401, "invalid_client", "Client authentication failed")
_BAD_GRANT_TYPE = _error(400, "unsupported_grant_type", "grant_type must be refresh_token")
_NO_TOKEN = _error(400, "invalid_request", "refresh_token is required")
BAD_GRANT = _error(400, "invalid_grant", "The refresh token is invalid, expired or revoked")


@dataclass(slots=True)
class TokenIssuer:
    """One provider account's OAuth 2.0 app and connection, and the tokens issued for it."""

    client_id: str
    client_secret: str = field(repr=False)
    initial_refresh_token: str = field(repr=False)
    prefix: str  # in every issued token, so a log would show whose it is (were one ever logged)
    lifetime_s: float
    grace_s: float = 0.0
    revoked: bool = False
    refreshes: int = 0  # refresh requests answered with new tokens
    _used: dict[str, float | None] = field(default_factory=dict, repr=False)  # refresh token -> first use
    _access: dict[str, float] = field(default_factory=dict, repr=False)  # access token -> expiry (wall)
    _serial: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Only the initial refresh token works again; no access token does."""
        self._used = {self.initial_refresh_token: None}
        self._access = {}
        self.revoked = False
        self.refreshes = 0

    def valid(self, access_token: str, wall: float) -> bool:
        """Whether `access_token` was issued here, is not expired and the connection stands."""
        expires = self._access.get(access_token)
        return not self.revoked and expires is not None and wall < expires

    def issue(self, wall: float) -> str:
        """A new access token, good for `lifetime_s` from `wall` (a refresh's, or a test's own)."""
        access = f"{self.prefix}_at_{next(self._serial)}_{secrets.token_urlsafe(12)}"
        self._access = {t: e for t, e in self._access.items() if e > wall}  # forget expired ones
        self._access[access] = wall + self.lifetime_s
        return access

    def current_refresh_token(self) -> str:
        """The refresh token that works now (the one last issued): what a client should hold."""
        return next(reversed(self._used))

    def refresh(self, incoming: Incoming, wall: float) -> Answer:
        """The token endpoint's answer to `POST` with a form body (RFC 6749 section 6)."""
        if not self._client_ok(incoming.headers.get("Authorization", "")):
            return _BAD_CLIENT
        form = parse_qs(incoming.body.decode("utf-8", "replace"))
        if form.get("grant_type") != ["refresh_token"]:
            return _BAD_GRANT_TYPE
        given = form.get("refresh_token", [""])[0]
        if not given:
            return _NO_TOKEN
        if self.revoked or given not in self._used:
            return BAD_GRANT
        first_use = self._used[given]
        if first_use is not None and wall - first_use > self.grace_s:
            return BAD_GRANT  # rotated: only the one issued in its place works now
        if first_use is None:
            self._used[given] = wall
        access, rotated = (
            self.issue(wall),
            f"{self.prefix}_rt_{next(self._serial)}_{secrets.token_urlsafe(12)}",
        )
        self._used[rotated] = None
        self.refreshes += 1
        payload = {
            "access_token": access,
            "expires_in": self.lifetime_s,
            "token_type": "Bearer",
            "refresh_token": rotated,
        }
        return json_answer(200, payload, Tally.TOKENS)

    def refused_echoing(self, incoming: Incoming) -> Answer:
        """A misbehaving token endpoint's refusal (fault echo_credentials, revoked connection):
        its description quotes the refresh token and the client credentials presented."""
        given = parse_qs(incoming.body.decode("utf-8", "replace")).get("refresh_token", [""])[0]
        client = incoming.headers.get("Authorization", "")
        return _error(400, "invalid_grant", f"refresh token {given} of client {client} is revoked")

    def _client_ok(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            pair = base64.b64decode(token.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return pair == f"{self.client_id}:{self.client_secret}"
