"""Sends the requests adapters describe; the one place aiohttp is touched and its errors caught.

It is also the one place credentials are scrubbed, because every provider answer and every
transport failure passes through `send` and nothing else: a key a 401 body quotes, or a gateway
page that lists the request headers, is `[redacted]` before any adapter, reason, log line or
ledger row can hold it. What to scrub comes from the request itself: the values its adapter
declares in `Request.secrets`, plus whatever its Authorization header carries (so a new
adapter is covered for standard auth even before it declares anything), each in every form a
server may echo it: raw, JSON-escaped, HTML-escaped, percent-encoded, and for Basic auth the
base64 pair, the decoded `user:pass` and each half.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, quote_plus

import aiohttp
from yarl import URL

from batchvoid import __version__
from batchvoid.models import Request, Response
from batchvoid.network import DIRECT, Route

MAX_BODY = 1 << 20  # an answer to a void is small; never buffer a runaway body
REDACTED = "[redacted]"
_REDACTED = REDACTED.encode()
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")
_ALNUM = re.compile(r"[A-Za-z0-9]+")
USER_AGENT = f"batchvoid/{__version__}"


class TransportError(Exception):
    """No answer came: a timeout, a refused or dropped connection. The void may have happened."""


class ProxyRefused(TransportError):
    """The proxy answered 407: it wants other credentials. Nothing reached the provider."""


def open_session(connections: int) -> aiohttp.ClientSession:
    """One session per run, sized to the run's total concurrency."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": USER_AGENT},
        auto_decompress=True,
        raise_for_status=False,
        trust_env=False,  # network.py picks proxies: aiohttp's would also send ~/.netrc logins
    )


async def send(
    session: aiohttp.ClientSession, request: Request, timeout_s: float, route: Route = DIRECT
) -> Response:
    """Send one request along `route` and read the whole answer, or raise TransportError; both
    are scrubbed, of the proxy's credentials too."""
    secrets = Secrets.of(request, route)
    headers, proxy_headers = request.headers, None
    if route.secrets:  # to the proxy only: in the CONNECT for https://, else in the request it forwards
        if request.url.startswith("https://"):
            proxy_headers = {"Proxy-Authorization": route.proxy_authorization}
        else:
            headers = {**request.headers, "Proxy-Authorization": route.proxy_authorization}
    try:
        async with session.request(
            request.method,
            URL(request.url, encoded=True),  # adapters percent-encode ids; keep them exact
            headers=headers,
            data=request.body,
            timeout=_timeout(timeout_s),
            allow_redirects=False,
            proxy=route.proxy,
            proxy_headers=proxy_headers,
            ssl=route.tls if route.tls is not None else True,
        ) as answer:
            if answer.status == 407 and route.proxy is not None:  # the proxy's answer, not the provider's
                raise ProxyRefused(_refused(route))
            body = await _read_body(answer.content)
            headers = secrets.scrub_headers(answer.headers, answer.raw_headers)
            return Response(answer.status, headers, secrets.scrub(body))
    except TimeoutError:
        raise TransportError(f"no answer within {timeout_s:g}s") from None
    except aiohttp.ClientHttpProxyError as exc:  # the proxy refused the CONNECT of an https:// request
        if exc.status == 407:
            raise ProxyRefused(_refused(route)) from None
        raise TransportError(f"the proxy {route.proxy} refused the connection: HTTP {exc.status}") from None
    except aiohttp.ClientError as exc:
        text = secrets.scrub_text(f"connection failed: {type(exc).__name__}: {exc}")
        raise TransportError(text[:300]) from None


async def _read_body(content: aiohttp.StreamReader) -> bytes:
    """The whole body, up to MAX_BODY: `read(n)` gives what has arrived, often one chunk of many."""
    body = await content.read(MAX_BODY)
    if content.at_eof() or not body:  # the usual answer: it came whole, in one piece
        return body
    parts = [body]
    size = len(body)
    while size < MAX_BODY and (part := await content.read(MAX_BODY - size)):
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _refused(route: Route) -> str:
    given = "the user and password" if route.secrets else "no credentials"
    return (
        f"the proxy {route.proxy} refused {given} from {route.variable} "
        "(HTTP 407 Proxy Authentication Required)"
    )


@lru_cache(maxsize=16)  # one per lane's timeout_s; aiohttp only reads it
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


@dataclass(frozen=True, slots=True)
class Secrets:
    """A request's credential values, and the scrubbing of every form of them out of an answer."""

    # (value, its longest ASCII alphanumeric run): every encoding below keeps that run as it is,
    # so an answer without it cannot hold the value in any form, and nothing more is computed.
    values: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, request: Request, route: Route = DIRECT) -> Secrets:
        """The values `request` declares, whatever its Authorization header carries, and the
        credentials of the proxy `route` goes through (its Proxy-Authorization, in every form)."""
        headers = request.headers
        auth = tuple([headers[name] for name in _credential_names(tuple(headers))])
        proxy = route.proxy_authorization if route.secrets else ""
        return _secrets(request.secrets, auth, proxy, request.public)

    def scrub(self, data: bytes) -> bytes:
        """`data` with every part of any form of any value replaced by REDACTED."""
        forms = {form for value, core in self.values if core in data for form in _forms(value)}
        return redact(data, forms) if forms else data

    def scrub_headers(
        self, headers: Mapping[str, str], raw: Iterable[tuple[bytes, bytes]] | None = None
    ) -> Mapping[str, str]:
        """Every header value scrubbed; one look at them all when none holds a value (the usual),
        in `raw` (the same headers as bytes) when given, and then `headers` as they are."""
        if raw is None:
            joined = "\n".join(headers.values()).encode("utf-8", "surrogateescape")
        else:
            joined = b"\n".join([value for _, value in raw])
        if not any(core in joined for _, core in self.values):
            return headers
        return {name: self.scrub_text(value) for name, value in headers.items()}

    def scrub_text(self, text: str) -> str:
        """`scrub` for text (UTF-8 keeps every form aligned to whole characters)."""
        encoded = text.encode("utf-8", "surrogateescape")
        scrubbed = self.scrub(encoded)
        return text if scrubbed is encoded else scrubbed.decode("utf-8", "surrogateescape")


@lru_cache(maxsize=256)  # most lanes' requests carry the same credentials every time
def _secrets(
    declared: tuple[str, ...], auth: tuple[str, ...], proxy: str, public: tuple[str, ...]
) -> Secrets:
    values = set(declared)
    for header in (*auth, proxy):
        if header:
            values.update(_credential_values(header))
    values.discard("")
    values.difference_update(public)
    return Secrets(tuple((value, _core(value)) for value in values))


@lru_cache(maxsize=256)  # a lane's requests carry the same header names every time
def _credential_names(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in names if name.lower() in _CREDENTIAL_HEADERS)


@lru_cache(maxsize=256)  # a lane's static credentials come back with every request
def _core(value: str) -> bytes:
    return max(_ALNUM.findall(value), key=len, default="").encode()


@lru_cache(maxsize=64)
def _credential_values(header: str) -> tuple[str, ...]:
    """The secret parts of an Authorization value: the token, and a Basic pair decoded and split."""
    scheme, space, token = header.strip().partition(" ")
    token = token.strip()
    if not space:
        return (header,)
    if scheme.lower() != "basic":
        return (token,)
    try:
        pair = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return (token,)
    user, _, password = pair.partition(":")
    return (token, pair, user, password)


def _forms(value: str) -> set[bytes]:
    """The ways a server may echo `value`: raw, JSON-escaped, HTML-escaped, percent-encoded."""
    if _PLAIN.fullmatch(value):  # the usual key: every encoding leaves it as it is
        return {value.encode()}
    escaped = json.dumps(value)[1:-1]
    forms = {
        value,
        escaped,
        escaped.replace("/", "\\/"),  # PHP's json_encode escapes every slash by default
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value),
        html.escape(value, quote=False),
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
    }
    return {form.encode("utf-8", "surrogateescape") for form in forms}


def redact(data: bytes, forms: Iterable[bytes]) -> bytes:
    """`data` with every byte of every occurrence of every form replaced by REDACTED.

    Overlapping and adjacent occurrences become one REDACTED, so no part of a secret is left.
    """
    spans: list[tuple[int, int]] = []
    for form in forms:
        if not form:
            continue
        start = data.find(form)
        while start != -1:
            spans.append((start, start + len(form)))
            start = data.find(form, start + 1)
    if not spans:
        return data
    spans.sort()
    parts: list[bytes] = []
    kept = 0  # data[:kept] is already in parts
    span_start, span_end = spans[0]
    for start, end in spans[1:]:
        if start <= span_end:
            span_end = max(span_end, end)
            continue
        parts += (data[kept:span_start], _REDACTED)
        kept, (span_start, span_end) = span_end, (start, end)
    parts += (data[kept:span_start], _REDACTED, data[span_end:])
    return b"".join(parts)
