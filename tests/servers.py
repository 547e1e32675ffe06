"""Servers that fail on purpose, for the tests of what our code does when a dependency does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A TCP server on a free loopback port that accepts every connection and never answers
    (an unresponsive SQS endpoint); yields its base URL."""
    connections: set[asyncio.StreamWriter] = set()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.add(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        connections.discard(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in connections:
            writer.close()
        await server.wait_closed()
