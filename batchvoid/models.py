"""The records that flow through a run: items in, requests out, responses in, outcomes out."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple


class ItemState(enum.StrEnum):
    """Where an item stands in the ledger: unfinished (the next run sends it), DONE or UNDONE."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    VOIDED = "voided"
    ALREADY_VOID = "already_void"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """True once no run sends it again (unless --retry-failed puts it back)."""
        return self in DONE or self in UNDONE

    @property
    def is_done(self) -> bool:
        """True for the states that mean the invoice is void at the provider."""
        return self in DONE


# Final states, in two kinds. Whatever reads or counts them (summary, progress, plan, exit
# status, the ledger's failure queries and redrive) takes them from here.
DONE = frozenset({ItemState.VOIDED, ItemState.ALREADY_VOID})  # void at the provider
UNDONE = frozenset({ItemState.FAILED})  # final but not void: reported as failed, redriven
# Redirects that say the request was not acted on where it went (a 303 may have been): an item
# failed by one has no outcome at its target, as a pending one has none.
UNACTED_REDIRECTS = (301, 302, 307, 308)


class OutcomeKind(enum.StrEnum):
    """What one provider answer means for the item it was about."""

    VOIDED = "voided"
    ALREADY_VOID = "already_void"
    REJECTED = "rejected"  # permanent: not found, not voidable, bad request
    AUTH_FAILED = "auth_failed"  # 401/403: the credential is wrong or revoked
    THROTTLED = "throttled"  # 429: slow the whole lane down
    RETRYABLE = "retryable"  # 5xx, 409 in progress, timeout, connection error


class Item(NamedTuple):
    """One row of a job file: a void to perform. Change one with `_replace`.

    A named tuple, not a frozen dataclass: a job file makes one per row, and a frozen
    dataclass's __init__ (an object.__setattr__ per field) took 4 times as long to make one,
    a quarter of reading a CSV row.
    """

    line: int
    provider: str
    invoice_id: str
    void_date: str | None = None
    company_id: str | None = None
    store: str | None = None
    metadata: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RowError:
    """One bad row of a job file: where it is and what is wrong with it."""

    line: int
    message: str


@dataclass(frozen=True, slots=True)
class WorkItem:
    """An item as a lane claims it from the ledger: with its key and its history."""

    id: int  # the ledger's row id
    item: Item
    idempotency_key: str
    attempts: int  # requests sent for it in earlier runs
    maybe_sent: bool  # a request for it may have reached the provider unanswered (a crash, a timeout)


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request described by an adapter, sent by the engine.

    `secrets` are the credential values the request carries (keys, tokens, signatures): the
    transport scrubs them, in every form, out of whatever comes back. They are never sent as such.
    The parts of an Authorization header are scrubbed too, except those named in `public`.
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)  # they carry the credentials
    body: bytes | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    # Parts of its credential headers that are documented constants, not secrets (Maxio's Basic
    # password "x"): scrubbing them would redact every "x" of every answer.
    public: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response as the engine received it, the request's secrets already scrubbed out."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    """An adapter's verdict on one response (or the engine's on a transport failure)."""

    kind: OutcomeKind
    reason: str = ""
    http_status: int | None = None
    reference: str | None = None  # the provider's own id for the operation or invoice
    retry_after: float | None = None  # seconds, from a Retry-After header
    # A rejection that may mean "already void": the engine reads the invoice's status to decide.
    check_status: bool = False


# What a rate limit may say, wherever it is written (a profile, a simulator fault): past these
# no pace, estimate or sliding window means anything, and an inf period divides by zero.
RATE_COUNTS = (1, 1_000_000)  # requests in one window
RATE_PERIODS = (0.001, 86400.0)  # a window's seconds: 1 ms to 24 h


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `count` requests in any window of `period` seconds (see `RATE_COUNTS`, `RATE_PERIODS`)."""

    count: int
    period: float
    text: str

    def __str__(self) -> str:
        return self.text

    @staticmethod
    def problem(count: str, period: float) -> str | None:
        """What is wrong with `count` (its digits, no leading zero) per `period` seconds, if anything."""
        most = RATE_COUNTS[1]
        if len(count) > len(str(most)) or int(count) > most:  # never int() of a 5000-digit string
            return f"the count must be at most {most:,} requests per window"
        low, high = RATE_PERIODS
        if not low <= period <= high:
            return "the period must be from 1ms to 24h (86400s)"
        return None


class StopKind(enum.StrEnum):
    """Why a lane (one provider) or the whole engine sends nothing more in this run."""

    AUTH_REFUSED = "auth_refused"  # a 401/403: the credential is wrong or revoked
    REAUTHORIZE = "reauthorize"  # an OAuth token endpoint refused the refresh token or the client
    CONNECTION_LOST = "connection_lost"  # no access token: the token endpoint fails, or a token is unsaved
    PROXY_REFUSED = "proxy_refused"  # a 407 from the proxy: its user and password
    REJECTIONS = "rejections"  # stop_after_rejections permanent failures in a row
    THROTTLED = "throttled"  # a pause over max_pause_s, or 429s for give_up_throttled_after_s
    UNEXPECTED = "unexpected"  # a bug, or a library's surprise, in the lane
    FAILURES = "failures"  # more failed items than the run allows
    FAILURE_RATE = "failure_rate"  # a larger share of failed items than the run allows
    INTERRUPTED = "interrupted"  # a signal


@dataclass(frozen=True, slots=True)
class Stop:
    """A stop as the engine knows it; the command layer words it for the operator.

    `detail` is the provider's or the library's own words (a reason, an error, the pace's
    verdict); `count`, `of` and `limit` are the figures of a streak or a failure limit.
    """

    kind: StopKind
    provider: str | None = None  # None: the whole engine stopped
    detail: str = ""
    item: Item | None = None  # the item at hand, for an unexpected error
    count: int = 0
    of: int = 0
    limit: float = 0.0
    setting: str = ""  # the variable or key to check, where the engine knows it (a proxy's)
