"""Rapyd: HMAC-signed requests, `idempotency` header, status envelope answers."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    describe,
    header,
    json_body,
    maybe_already_void,
    settled,
    transient,
)
from batchvoid.providers.facts import Idempotency, ProviderSpec, Route

TIMESTAMP_WINDOW_S = 60  # Rapyd refuses a request whose timestamp is further off its clock
CLOCK_NOTICE_S = 5  # a clock further off the provider's Date than this is named in a 401's reason


def signature(
    *,
    method: str,
    path: str,
    salt: str,
    timestamp: int,
    access_key: str,
    secret_key: str,
    body: str = "",
) -> str:
    """Rapyd's request signature: base64 of the hex HMAC-SHA256 of the documented string."""
    to_sign = f"{method.lower()}{path}{salt}{timestamp}{access_key}{secret_key}{body}"
    digest = hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return base64.b64encode(digest.encode()).decode()


_NOT_VOIDABLE = "ERROR_VOID_NOT_UNCOLLECTIBLE_OR_OPEN_INVOICE"


class Salts:
    """Rapyd's per-request salt: 12 bytes from the OS's random source, as URL-safe base64 (16
    characters), `secrets.token_urlsafe(12)`'s form, read PER_READ at a time.

    A read is a system call that lets go of the GIL, and another thread that takes it (the
    ledger's) can keep the event loop waiting for it: one read per request cost 7.5 us per
    Rapyd void in the engine's profile (`os.urandom` 0.4 us alone).
    """

    SIZE = 12
    PER_READ = 256

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()  # adapters may be asked from more than one thread

    def __call__(self) -> str:
        with self._lock:
            at = self._at
            if at == len(self._pool):
                self._pool, at = os.urandom(self.SIZE * self.PER_READ), 0
            self._at = at + self.SIZE
            raw = self._pool[at : at + self.SIZE]
        return base64.urlsafe_b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class Rapyd(AdapterBase):
    base_url: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    # Injectable so tests can pin a signature; a fresh salt and timestamp per request.
    salt: Callable[[], str] = field(default_factory=Salts, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def _signed(self, route: Route, item: Item, idempotency_key: str | None) -> Request:
        method, path = route.method, route.url("", invoice_id=item.invoice_id)
        salt, timestamp = self.salt(), int(self.clock())
        signed = signature(
            method=method,
            path=path,
            salt=salt,
            timestamp=timestamp,
            access_key=self.access_key,
            secret_key=self.secret_key,
        )
        headers = {
            "access_key": self.access_key,
            "salt": salt,
            "timestamp": str(timestamp),
            "signature": signed,
            "Content-Type": "application/json",
        }
        if idempotency_key is not None:
            headers[_IDEMPOTENCY_HEADER] = idempotency_key
        # The salt too: with the signature and the timestamp it is all a replay needs.
        hidden = (self.access_key, self.secret_key, signed, salt)
        return Request(method, self.base_url + path, headers, secrets=hidden)

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        return self._signed(SPEC.void, item, idempotency_key)

    def parse_void(self, item: Item, response: Response) -> Outcome:
        status, data = _envelope(response)
        reference = status.get("operation_id") or None
        if response.status == 200 and status.get("status") == "SUCCESS":
            if data.get("status") == "void":  # the usual answer: no reason to word
                return Outcome(OutcomeKind.VOIDED, "", 200, reference)
            reason = f"answered 200 but the invoice status is {data.get('status')!r}"
            return Outcome(OutcomeKind.REJECTED, reason, 200, reference)
        code = status.get("error_code")
        reason = describe(response, code and f"{code}: {status.get('message', '')}") + self._clock(response)
        if (shared := transient(response, reason)) is not None:
            return shared
        if status.get("error_code") == _NOT_VOIDABLE:  # also its answer to a void of a void invoice
            return maybe_already_void(SPEC, response, reason, reference)
        return Outcome(OutcomeKind.REJECTED, reason, response.status, reference)

    def lookup_request(self, item: Item) -> Request | None:
        return self._signed(_LOOKUP, item, None)

    def parse_lookup(self, item: Item, response: Response, rejected: Outcome) -> Outcome:
        status, data = _envelope(response)
        if response.status == 200 and status.get("status") == "SUCCESS":
            return settled(SPEC, rejected, data.get("status"))
        reason = describe(response, status.get("error_code")) + self._clock(response)
        return transient(response, f"status lookup: {reason}") or rejected

    def _clock(self, response: Response) -> str:
        """For a 401: how far this machine's clock is off the provider's `Date`, if it is."""
        if response.status != 401:
            return ""
        offset = _clock_offset(response, self.clock())
        if offset is None or abs(offset) <= CLOCK_NOTICE_S:
            return ""
        side = "ahead of" if offset > 0 else "behind"
        text = f"this machine's clock is {abs(offset):.0f} s {side} Rapyd's (its Date header)"
        if abs(offset) > TIMESTAMP_WINDOW_S:
            return (
                f"; {text}, and Rapyd refuses a request signed more than {TIMESTAMP_WINDOW_S} s off "
                "its clock: set this machine's clock right (NTP) before suspecting the keys"
            )
        return f"; {text}: Rapyd allows {TIMESTAMP_WINDOW_S} s, so the keys are the likelier cause"


def _clock_offset(response: Response, now: float) -> float | None:
    """Seconds this machine's clock (`now`) is ahead of the `Date` the provider answered with."""
    date = header(response.headers, "Date")
    try:
        when = email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return now - when.timestamp()


def _envelope(response: Response) -> tuple[dict[str, Any], dict[str, Any]]:
    body = json_body(response)
    if not isinstance(body, dict):
        return {}, {}
    status, data = body.get("status"), body.get("data")
    return (status if isinstance(status, dict) else {}), (data if isinstance(data, dict) else {})


def _build(base_url: str, creds: Mapping[str, str], options: Mapping[str, str]) -> Rapyd:
    return Rapyd(base_url, creds["access_key"], creds["secret_key"])


SPEC = ProviderSpec(
    type="rapyd",
    title="Rapyd",
    credentials={"access_key_env": "RAPYD_ACCESS_KEY", "secret_key_env": "RAPYD_SECRET_KEY"},
    options={},
    default_base_url="https://sandboxapi.rapyd.net",
    void=Route("POST", "/v1/invoices/{invoice_id}/void"),
    lookup=Route("GET", "/v1/invoices/{invoice_id}"),
    void_status="void",
    documented_limits=("200/60s", "1000/300s"),
    example_limits=("200/60s", "1000/300s"),
    limits_note="documented: 200 per minute and 1000 per 5 minutes, both at once (about 3.3/s)",
    idempotency=Idempotency("idempotency"),
    build=_build,
)
_LOOKUP = SPEC.lookup or SPEC.void
_IDEMPOTENCY_HEADER = SPEC.idempotency_header or "idempotency"
