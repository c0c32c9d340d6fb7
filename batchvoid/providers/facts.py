"""One record of facts per provider, read by its adapter, its simulated twin, the config and
job-file checks, the catalog and the tests.

Only wire facts live here (routes, credential roles, idempotency header, limits, row fields):
how a provider's answers are read stays in its adapter, and how they are made stays in the
simulator, so that the simulator still catches an adapter that misreads its provider.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from batchvoid.oauth import AccessToken
    from batchvoid.providers.base import Adapter

_PARAM = re.compile(r"\{(\w+)\}")
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")  # what quote() leaves as it is


@dataclass(frozen=True, slots=True)
class Route:
    """One documented endpoint: its method and its path, with `{invoice_id}`-style parameters."""

    method: str
    path: str

    @property
    def params(self) -> tuple[str, ...]:
        """The path's parameters, in order."""
        return tuple(_PARAM.findall(self.path))

    def url(self, base_url: str, **params: str) -> str:
        """The full URL; every parameter percent-encoded, '/' included, so no id changes the path."""
        parts = _split(self.path)  # literal, name, literal, name, ..., literal
        pieces = [base_url, parts[0]]
        for i in range(1, len(parts), 2):
            value = params[parts[i]]
            pieces += (value if _UNRESERVED.fullmatch(value) else quote(value, safe=""), parts[i + 1])
        return "".join(pieces)


@lru_cache(maxsize=64)  # a route's path is split once, not once per request
def _split(path: str) -> list[str]:
    return _PARAM.split(path)


@dataclass(frozen=True, slots=True)
class Idempotency:
    """The provider's idempotency header and what it documents about it."""

    header: str  # the header's name; the query parameter's when `in_query`
    max_length: int | None = None  # longest key it takes; None when not documented
    note: str = ""  # e.g. how long a key's first answer is replayed
    in_query: bool = False  # a query parameter (QuickBooks' requestid), not a header


@dataclass(frozen=True, slots=True)
class RowField:
    """An optional job-file column this provider reads; a profile setting of the same name,
    when the provider has one, is its default."""

    name: str
    meaning: str
    prefix: str | None = None  # every value must start with this (e.g. Maple's "cmp_")
    required: bool = False  # a row must have it, from the row or the profile's setting
    choices: tuple[str, ...] = ()  # the values it may take (lower case); () when any text will do
    max_length: int | None = None  # the longest value the provider takes (e.g. Chargebee's comment)


@dataclass(frozen=True, slots=True)
class OAuthFacts:
    """What an OAuth 2.0 provider documents about its connections (Xero, QuickBooks Online)."""

    token_url: str  # the refresh endpoint; on another host than the API
    access_lifetime_s: float  # used when a token answer says no expires_in
    authorize: str  # where a person learns to get the first refresh token (the README section)
    grace: str = ""  # what the provider does with a refresh token used twice, for messages


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A provider type: its facts, and how to build its adapter."""

    type: str
    title: str
    credentials: Mapping[str, str]  # config key (e.g. "access_key_env") -> default env var
    options: Mapping[str, str]  # per-account settings (config keys) -> what they mean
    default_base_url: str | None  # None: every account has its own URL, so it is required
    void: Route
    documented_limits: tuple[str, ...]  # as the provider documents them; () when none is documented
    example_limits: tuple[str, ...]  # conservative: what the example config and --simulate use
    limits_note: str
    build: Callable[[str, Mapping[str, str], Mapping[str, str]], Adapter]
    # build(base_url, secrets by role e.g. {"access_key": ...}, options e.g. {"company_id": ...})
    lookup: Route | None = None  # the documented read of one invoice, if the adapter uses one
    other_voids: tuple[Route, ...] = ()  # other documented voids it picks among (Recurly's mark_failed)
    void_status: str | None = None  # the read's status of a void invoice (e.g. "void")
    done_statuses: tuple[str, ...] = ()  # other read statuses that mean it is done (Recurly's "failed")
    max_in_flight: int | None = None  # documented most requests at once per account; None: not documented
    idempotency: Idempotency | None = None
    row_fields: tuple[RowField, ...] = ()
    # Named base URLs a profile's `region` chooses from (Lago's "us", "eu"); base_url instead
    # names any other (a self-hosted one). The default is `default_base_url`.
    regions: Mapping[str, str] = field(default_factory=dict)
    account_url: str | None = None  # with no default: the form of an account's URL, for messages
    # The start of every route's path, which the provider's docs write into their base URL
    # (Lago's "/api/v1"): a base_url ending with it would double it, so config refuses one.
    api_prefix: str | None = None
    required_options: tuple[str, ...] = ()  # options every profile must set (the account: a tenant)
    requests_per_item: int = 1  # requests one void takes before any retry (a read first: 2)
    oauth: OAuthFacts | None = None  # an OAuth 2.0 provider: its credentials are the app's client
    # connect(base_url, the connection's current access token, options): an OAuth 2.0 adapter,
    # used in place of `build` (whose secrets, the client's, only the token endpoint needs)
    connect: Callable[[str, AccessToken, Mapping[str, str]], Adapter] | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        """The credential roles, e.g. ("access_key", "secret_key")."""
        return tuple(key.removesuffix("_env") for key in self.credentials)

    @property
    def idempotency_header(self) -> str | None:
        if self.idempotency is None or self.idempotency.in_query:
            return None
        return self.idempotency.header

    def row_field(self, name: str) -> RowField | None:
        """The row field `name`, if this provider reads it."""
        return next((f for f in self.row_fields if f.name == name), None)
