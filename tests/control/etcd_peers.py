"""Misbehaving etcd members for the failover tests: real TCP servers on port 0.

- `holding_member()`: takes every request and never answers, as a member that lost
  its leader holds a write it forwarded to the dead leader.
- `slow_proxy(endpoint, delay)`: a real member behind a proxy that holds each answer
  `delay` seconds, as a cluster on a slow disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit


async def _serve(handler: object) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _close(server: asyncio.Server, tasks: set[asyncio.Task[None]]) -> None:
    server.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()


@contextlib.asynccontextmanager
async def holding_member() -> AsyncIterator[str]:
    """An endpoint URL whose server reads requests and never answers them."""
    tasks: set[asyncio.Task[None]] = set()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()

    server, url = await _serve(hold)
    try:
        yield url
    finally:
        await _close(server, tasks)


@contextlib.asynccontextmanager
async def slow_proxy(endpoint: str, delay: float) -> AsyncIterator[str]:
    """An endpoint URL that forwards to `endpoint` and holds each answer `delay` s."""
    target = urlsplit(endpoint)
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, wait: float) -> None:
        while data := await src.read(65536):
            await asyncio.sleep(wait)
            dst.write(data)
            await dst.drain()
        dst.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        up_r, up_w = await asyncio.open_connection(target.hostname, target.port)
        try:
            await asyncio.gather(pipe(reader, up_w, 0.0), pipe(up_r, writer, delay))
        except ConnectionError:
            pass
        finally:
            up_w.close()
            writer.close()

    server, url = await _serve(proxy)
    try:
        yield url
    finally:
        await _close(server, tasks)
