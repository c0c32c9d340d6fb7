"""What every provider adapter is and shares: the spec, the protocol, and answer helpers.

Adapters are sans-IO: they describe requests and judge responses; the engine does all I/O.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.facts import ProviderSpec


class Adapter(Protocol):
    """Turns an item into a void request and a provider's answer into an outcome."""

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        """Describe the request that voids `item`, carrying `idempotency_key` where supported."""
        ...

    def parse_void(self, item: Item, response: Response) -> Outcome:
        """Judge the provider's answer to a void request."""
        ...

    def lookup_request(self, item: Item) -> Request | None:
        """Describe a request that reads the invoice's status, or None if not needed."""
        ...

    def read_request(self, item: Item) -> Request | None:
        """Describe a read the void depends on (Recurly's invoice type, when the row does not
        say it), or None: the void can be described from the item alone."""
        ...

    def parse_read(self, item: Item, response: Response) -> Item | Outcome:
        """Judge the answer to `read_request`: the item with what the read told (its void goes
        next, at the provider's pace), or the outcome that settles it without a void."""
        ...

    def parse_lookup(self, item: Item, response: Response, rejected: Outcome) -> Outcome:
        """Decide, from the invoice's status, whether an ambiguous rejection was 'already void'."""
        ...


class AdapterBase:
    """Defaults for adapters whose 'not voidable' answers are unambiguous (no lookup) and whose
    void needs no read first."""

    def lookup_request(self, item: Item) -> Request | None:
        return None

    def parse_lookup(self, item: Item, response: Response, rejected: Outcome) -> Outcome:
        return rejected

    def read_request(self, item: Item) -> Request | None:
        return None

    def parse_read(self, item: Item, response: Response) -> Item | Outcome:
        raise NotImplementedError("an adapter that asks for a read judges its answer")


_ALREADY_VOID = re.compile(r"already\s+void", re.IGNORECASE)


def says_already_void(message: object) -> bool:
    """Whether a provider's error message says the invoice is void already ("already voided" too).

    No provider documents its answer to voiding a void invoice, so the message is what there is.
    """
    return bool(message) and _ALREADY_VOID.search(str(message)) is not None


def maybe_already_void(
    spec: ProviderSpec, response: Response, reason: str, reference: str | None = None
) -> Outcome:
    """A void's state error that could mean "already void" (the provider answers a second void
    like one of a paid or draft invoice): read the invoice to decide, through the provider's
    documented read (`spec.lookup`, judged by `settled`); with no read, fail, saying so."""
    if spec.lookup is not None:
        return Outcome(OutcomeKind.REJECTED, reason, response.status, reference, check_status=True)
    reason = (
        f"{reason}; it may be void already, but {spec.title} documents no read of an invoice to "
        f"confirm it: check the invoice in {spec.title}"
    )
    return Outcome(OutcomeKind.REJECTED, reason, response.status, reference)


def settled(spec: ProviderSpec, rejected: Outcome, status: object) -> Outcome:
    """The outcome of a state error once the read gave the invoice's `status`: already void when
    it is the provider's void status, else the rejection, naming the status."""
    if (spec.void_status is not None and status == spec.void_status) or status in spec.done_statuses:
        return replace(rejected, kind=OutcomeKind.ALREADY_VOID, check_status=False)
    return replace(rejected, reason=f"{rejected.reason} (invoice status: {status})", check_status=False)


def json_body(response: Response) -> Any:
    """The response body as JSON, or None when it is not JSON."""
    try:
        return orjson.loads(response.body)
    except orjson.JSONDecodeError:  # or JSON orjson does not take: integers past 64 bits, NaN
        pass
    try:
        return json.loads(response.body)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return None


def basic_auth(user: str, password: str = "") -> str:
    """An HTTP Basic Authorization value (an API key as the user: an empty password)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def json_object(response: Response) -> dict[str, Any]:
    """The response body as a JSON object; {} when it is anything else."""
    body = json_body(response)
    return body if isinstance(body, dict) else {}


def string(value: object) -> str | None:
    """A field of a provider's answer if it is a string, else None."""
    return value if isinstance(value, str) else None


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), if usable."""
    value = header(headers, "Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, looked up case-insensitively."""
    name = name.lower()
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def transient(response: Response, reason: str) -> Outcome | None:
    """The outcome for answers every provider shares: auth, throttling, server errors, redirects."""
    status = response.status
    if 300 <= status < 400 and status != 304:
        return Outcome(OutcomeKind.REJECTED, redirected(response), status)
    if status in (401, 403):
        return Outcome(OutcomeKind.AUTH_FAILED, reason, status)
    if status == 429:
        return Outcome(OutcomeKind.THROTTLED, reason, status, retry_after=retry_after(response.headers))
    if status in (408, 425) or status >= 500:
        return Outcome(OutcomeKind.RETRYABLE, reason, status)
    return None


def redirected(response: Response) -> str:
    """The reason for a redirect, naming where it points (scheme and host only: never a userinfo)."""
    location = header(response.headers, "Location")
    if not location or not location.strip():
        where = "nowhere (no Location header)"
    else:
        where = _location(location.strip())
    return (
        f"HTTP {response.status}: redirected to {where}; batchvoid does not follow redirects: check base_url"
    )


def _location(location: str) -> str:
    try:
        parts = urlsplit(location)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "an unreadable Location"
    if not host:
        return f"{' '.join(parts.path.split())[:100] or '/'} on the same host"
    host = f"[{host}]" if ":" in host else host
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    return f"{scheme}{host}" + (f":{port}" if port is not None else "")


def describe(response: Response, message: object) -> str:
    """A one-line reason: the HTTP status and the provider's own message, trimmed."""
    text = str(message).strip() if message else ""
    if not text:
        text = response.body[:200].decode("utf-8", "replace").strip() or "no body"
    return f"HTTP {response.status}: {' '.join(text.split())[:300]}"
