"""A forward HTTP proxy on loopback, for tests: it records every request and forwards it upstream.

It takes CONNECT (for https://: a tunnel it cannot look into) and absolute-form requests (`GET http://billing.example.test/path HTTP/1.1`), as a client
configured with HTTP_PROXY sends them, and forwards each, whatever host it names, to one
upstream address (the simulator): so a made-up host name resolves only through the proxy, and
a request that reaches the simulator without it fails instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HOP_BY_HOP = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


@dataclass
class Seen:
    """One request the proxy received: its request line's target, and its headers."""

    method: str
    target: str
    headers: dict[str, str]  # names in lower case


@dataclass
class Proxy:
    """A running proxy: its URL, what it saw, and an optional canned answer instead of forwarding."""

    upstream: tuple[str, int]
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    answer: bytes | None = None
    answer_only: str | None = None  # the canned answer goes to requests of this method only
    # The connections' handlers: a server's close() leaves them running, and one the loop's end
    # destroyed mid-tunnel complained in whichever later test a collection found it.
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection: every answer says Connection: close."""
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append(Seen(method, target, headers))
            canned = self.answer if self.answer_only in (None, method) else None
            if method == "CONNECT" and canned is None:
                await self._tunnel(reader, writer)
            elif canned is not None:
                writer.write(canned)
            else:
                writer.write(await self._forward(method, target, headers, body))
            await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # a client that connected and left
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """CONNECT: bytes both ways between the client and the upstream, until either side closes."""
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(OSError):
                sink.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        parts = urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        kept = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k not in HOP_BY_HOP)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            up_writer.write(f"{method} {path} HTTP/1.1\r\n{kept}connection: close\r\n\r\n".encode() + body)
            await up_writer.drain()
            answer = await up_reader.read()  # the upstream closes after one answer
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()
        # one answer per upstream connection: tell the client to open a new one for the next
        head, _, rest = answer.partition(b"\r\n\r\n")
        kept_head = b"\r\n".join(
            line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")
        )
        return kept_head + b"\r\nConnection: close\r\n\r\n" + rest


@contextlib.asynccontextmanager
async def forward_proxy(upstream_url: str) -> AsyncIterator[Proxy]:
    """A proxy on a loopback port that forwards every request to `upstream_url`'s host and port."""
    parts = urlsplit(upstream_url)
    proxy = Proxy(upstream=(parts.hostname or "127.0.0.1", parts.port or 80))
    server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        server.close()
        for task in proxy.handlers:
            task.cancel()
        await asyncio.gather(*proxy.handlers, return_exceptions=True)
        await server.wait_closed()
