"""The transport reads a provider's whole answer, however it arrives, and never more than MAX_BODY."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest

from batchvoid.models import Request
from batchvoid.transport import MAX_BODY, REDACTED, send

KEY = "sk_live_chunked_0123456789abcdef"


@pytest.fixture
async def chunked_server() -> AsyncIterator[tuple[str, list[Sequence[bytes]]]]:
    """A loopback server that answers each request with the next body of `bodies`, one chunk at a time."""
    bodies: list[Sequence[bytes]] = []
    answering: set[asyncio.Task[None]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        answering.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n")
            writer.write(b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            for chunk in bodies.pop(0):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                await asyncio.sleep(0.02)  # each chunk its own read on the other side
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:  # the client stopped reading at MAX_BODY and hung up
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", bodies
    finally:
        server.close()
        if answering:  # every answer ends (and closes its socket) before the loop does
            await asyncio.wait(answering, timeout=10)
        await server.wait_closed()


@pytest.mark.anyio
async def test_a_body_in_many_chunks_is_read_whole_and_scrubbed(
    chunked_server: tuple[str, list[Sequence[bytes]]],
) -> None:
    """An answer sent in three chunks comes back whole, and a key in its second chunk is [redacted]."""
    url, bodies = chunked_server
    whole = json.dumps({"message": f"Invoice is already voided. Key {KEY} was used.", "code": "x" * 500})
    text = whole.encode()
    bodies.append([text[:20], text[20:60], text[60:]])
    request = Request("PATCH", f"{url}/void", {"Authorization": f"Bearer {KEY}"}, secrets=(KEY,))
    async with aiohttp.ClientSession() as session:
        response = await send(session, request, 5)
    assert json.loads(response.body) == json.loads(whole.replace(KEY, REDACTED))


@pytest.mark.anyio
async def test_a_runaway_body_is_cut_at_max_body(chunked_server: tuple[str, list[Sequence[bytes]]]) -> None:
    """A body past MAX_BODY, in chunks, is read up to MAX_BODY and no further."""
    url, bodies = chunked_server
    bodies.append([b"a" * (MAX_BODY // 2), b"b" * (MAX_BODY // 2), b"c" * 4096])
    async with aiohttp.ClientSession() as session:
        response = await send(session, Request("PATCH", f"{url}/void", {}), 5)
    assert response.body == b"a" * (MAX_BODY // 2) + b"b" * (MAX_BODY // 2)
