"""What every simulated provider offers the server, and helpers they share."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from batchvoid.providers.facts import ProviderSpec
from batchvoid.simulator.exchange import Action, Answer, Incoming
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint of a provider, at its real method and path."""

    method: str
    path: str  # an aiohttp route pattern; path parameters are `{invoice_id}`, `{company_id}`
    action: Action


def routes(spec: ProviderSpec) -> tuple[Route, ...]:
    """The provider's documented voids (and read, if it has one), and an OAuth 2.0 provider's
    token endpoint, from its facts; a path's fixed query (`?operation=void`) is the provider's
    to check."""
    found = [Route(r.method, _path(r.path), Action.VOID) for r in (spec.void, *spec.other_voids)]
    if spec.lookup is not None:
        found.append(Route(spec.lookup.method, _path(spec.lookup.path), Action.LOOKUP))
    if spec.oauth is not None:
        found.append(Route("POST", _path(spec.oauth.token_url), Action.TOKEN))
    return tuple(found)


def _path(path_or_url: str) -> str:
    return urlsplit(path_or_url).path


class Provider(Protocol):
    """One simulated provider: its endpoints, credential check and answers, without I/O.

    The server calls, in order: `authenticate` (or `unauthorized` when the credential is
    revoked; `unauthorized_echoing` instead of a 401 when the credential is to be echoed),
    then its own rate limits (`throttled`), its injected faults (`server_error`), then
    `answer`, which owns idempotency replay and the invoice logic.
    """

    @property
    def name(self) -> str:
        """The provider type, as in `PROVIDER_TYPES`."""
        ...

    @property
    def routes(self) -> Sequence[Route]: ...

    @property
    def has_drafts(self) -> bool:
        """Whether ids beginning `draft` are draft invoices here (else they are open)."""
        ...

    def authenticate(self, incoming: Incoming) -> Answer | None:
        """The 401/403 answer when the request's credentials are not the account's; else None."""
        ...

    def unauthorized(self) -> Answer:
        """The answer for a request made with the account's credential after it was revoked."""
        ...

    def unauthorized_echoing(self, incoming: Incoming) -> Answer:
        """A misbehaving provider's 401 (fault echo_credentials): its own error, quoting the
        credential the request presented."""
        ...

    def throttled(self, wait_s: float) -> Answer:
        """The 429 answer; a slot frees in `wait_s` seconds."""
        ...

    def server_error(self, status: int) -> Answer:
        """The answer to an injected 5xx with this status."""
        ...

    def answer(
        self, action: Action, incoming: Incoming, book: InvoiceBook, replays: IdempotencyStore
    ) -> Answer:
        """The app's answer to an authenticated, admitted request."""
        ...


def basic_login(incoming: Incoming) -> tuple[str, str]:
    """The user and password of the request's HTTP Basic credentials; empty if it has none
    (or they do not decode)."""
    scheme, _, token = incoming.headers.get("Authorization", "").partition(" ")
    if scheme != "Basic":
        return "", ""
    try:
        user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return user, password


def amount_cents(invoice_id: str) -> int:
    """A made-up but stable invoice total for `invoice_id`."""
    return 100 + zlib.crc32(invoice_id.encode()) % 100_000


def numeric_id(invoice_id: str) -> int | str:
    """The id as the provider's JSON would carry it: an integer when it is one."""
    if invoice_id.isascii() and invoice_id.isdigit() and str(int(invoice_id)) == invoice_id:
        return int(invoice_id)
    return invoice_id


def utc(wall: float) -> dt.datetime:
    """A `time.time()` value as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(wall, dt.UTC)
