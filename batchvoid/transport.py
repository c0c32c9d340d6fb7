"""Sends the requests adapters describe. The one place aiohttp's exceptions are caught."""

from __future__ import annotations

import aiohttp
from yarl import URL

from batchvoid.models import Request, Response

MAX_BODY = 1 << 20  # an answer to a void is small; never buffer a runaway body


class TransportError(Exception):
    """No answer came: a timeout, a refused or dropped connection. The void may have happened."""


def open_session(connections: int) -> aiohttp.ClientSession:
    """One session per run, sized to the run's total concurrency."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": "batchvoid"},
        auto_decompress=True,
        raise_for_status=False,
    )


async def send(session: aiohttp.ClientSession, request: Request, timeout_s: float) -> Response:
    """Send one request and read the whole answer, or raise TransportError."""
    try:
        async with session.request(
            request.method,
            URL(request.url, encoded=True),  # adapters percent-encode ids; keep them exact
            headers=dict(request.headers),
            data=request.body,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as answer:
            body = await answer.content.read(MAX_BODY)
            return Response(answer.status, dict(answer.headers), body)
    except TimeoutError:
        raise TransportError(f"no answer within {timeout_s:g}s") from None
    except aiohttp.ClientError as exc:
        raise TransportError(f"connection failed: {type(exc).__name__}: {exc}"[:300]) from None
