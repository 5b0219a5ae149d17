"""The web app's budget of heavy requests, so that some clients asking much, or reading slowly,
cannot take every database connection from the map (#26 defect 9).

Heavy requests are the summaries and the vector tiles below the detail zoom that the
aggregates (`map_cells`) cannot answer (counted from the detections), and the downloads
(exports and diffs). One client address runs at most `WEB_CLIENT_HEAVY_REQUESTS` of them at once; more
wait their turn, at most the statement timeout, then get 429. Summaries and low-zoom tiles
share `WEB_HEAVY_REQUESTS` slots of the main pool's connections (the rest stay for the map's
other requests); downloads have their own pool of `WEB_EXPORT_CONNECTIONS` connections, one
slot each. A heavy request that finds no slot within the statement timeout gets 503.

The client is the connection's address: behind a proxy every client would share the proxy's,
so a deployment behind one raises `WEB_CLIENT_HEAVY_REQUESTS` (no forwarded header is trusted).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from amberscan.common.settings import WebConfig


class Busy(Exception):
    """No slot for a heavy request within the wait: the app answers 503 with Retry-After."""


class Budget:
    """Slots of heavy requests: in all, for downloads, and per client address."""

    def __init__(self, web_config: WebConfig) -> None:
        self.wait_s = web_config.statement_timeout_s
        self.per_client = web_config.client_heavy_requests
        self.heavy_slots = asyncio.Semaphore(web_config.heavy_requests)
        self.download_slots = asyncio.Semaphore(web_config.export_connections)
        self.clients: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def _client(self, request: web.Request) -> AsyncIterator[None]:
        address = request.remote or ""
        slots, users = self.clients.get(address, (asyncio.Semaphore(self.per_client), 0))
        self.clients[address] = (slots, users + 1)
        try:
            try:
                async with asyncio.timeout(self.wait_s):
                    await slots.acquire()
            except TimeoutError:
                raise web.HTTPTooManyRequests(
                    text=f"this client already runs {self.per_client} heavy requests (summaries, "
                    "overview tiles, exports, diffs); wait for one to finish",
                    headers={"Retry-After": "1"},
                ) from None
            try:
                yield
            finally:
                slots.release()
        finally:
            slots, users = self.clients[address]
            if users <= 1:
                del self.clients[address]
            else:
                self.clients[address] = (slots, users - 1)

    @contextlib.asynccontextmanager
    async def _slot(self, slots: asyncio.Semaphore, what: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.wait_s):
                await slots.acquire()
        except TimeoutError:
            raise Busy(f"every slot for {what} is taken") from None
        try:
            yield
        finally:
            slots.release()

    @contextlib.asynccontextmanager
    async def heavy(self, request: web.Request) -> AsyncIterator[None]:
        """Around a summary or a low-zoom tile."""
        async with self._client(request), self._slot(self.heavy_slots, "heavy requests"):
            yield

    @contextlib.asynccontextmanager
    async def download(self, request: web.Request) -> AsyncIterator[None]:
        """Around an export or a diff, before its response starts (a refusal is still a
        status): it then has a connection of the downloads' pool."""
        async with self._client(request), self._slot(self.download_slots, "downloads"):
            yield
