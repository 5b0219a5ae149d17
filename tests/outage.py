"""A server outage without stopping the server: a TCP proxy on loopback in front of it.

Tests must never stop the shared stack's servers, which other tests use. Pointing the code under
test at this proxy instead, `cut()` drops every open connection and refuses new ones, as a
server that was killed does; `restore()` serves again, as a server back from a restart does.
`read_only_database` makes a database of the test's own read-only, as after a failover, never the
shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from tests.streams import free_port


class Outage:
    """Forwards 127.0.0.1:`port` to `target` ("host:port") until cut."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        """Accept and forward connections (again)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        pipes = {
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        }
        self._pipes |= pipes
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        for w in (writer, up_writer):
            w.transport.abort()
            self._writers.discard(w)
        self._pipes -= pipes

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


@contextlib.asynccontextmanager
async def outage_proxy(target: str) -> AsyncIterator[Outage]:
    """An `Outage` proxy serving while the block runs (cut or restored by the test)."""
    proxy = Outage(target)
    await proxy.restore()
    try:
        yield proxy
    finally:
        await proxy.cut()


def database_url_via(url: str, proxy: Outage) -> str:
    """`url` (postgresql://user@host:port/db) with its host and port replaced by the proxy's."""
    head, rest = url.split("@", 1)
    _, db = rest.split("/", 1)
    return f"{head}@{proxy.address}/{db}"


def database_address(url: str) -> str:
    """host:port of a postgresql:// URL."""
    return url.split("@", 1)[1].split("/", 1)[0]


class ReadOnlyDatabase:
    """A database of the test's own (PostGIS in it), which `read_only()` turns into what a
    standby promoted wrongly or a primary fenced after a failover is: every open connection
    dropped, and new ones read-only (SQLSTATE 25006 on any write); `writable()` undoes it."""

    def __init__(self, url: str, name: str) -> None:
        self.admin_url = url
        self.name = name
        head, _ = url.rsplit("/", 1)
        self.url = f"{head}/{name}"

    async def _admin(self, *statements: sql.Composable) -> None:
        async with await psycopg.AsyncConnection.connect(self.admin_url, autocommit=True) as conn:
            for statement in statements:
                await conn.execute(statement)

    async def read_only(self) -> None:
        await self._switch("on")

    async def writable(self) -> None:
        await self._switch("off")

    async def _switch(self, value: str) -> None:
        """Set the database's default, then end every session opened before, and wait until
        they are gone (`pg_terminate_backend` only signals them): only new ones remain."""
        async with await psycopg.AsyncConnection.connect(self.admin_url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                    sql.Identifier(self.name), sql.SQL(value)
                )
            )
            # The sessions of this database only, listed first: a predicate calling
            # pg_terminate_backend beside the filter may run on every session of the server.
            cursor = await conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.name,)
            )
            ended = [row[0] for row in await cursor.fetchall()]
            for pid in ended:
                await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            while ended:
                cursor = await conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (ended,)
                )
                ended = [row[0] for row in await cursor.fetchall()]
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def read_only_database(url: str, name: str) -> AsyncIterator[ReadOnlyDatabase]:
    """A new database `name` with PostGIS beside the one `url` names, dropped after the block."""
    database = ReadOnlyDatabase(url, name)
    await database._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        async with await psycopg.AsyncConnection.connect(database.url, autocommit=True) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        yield database
    finally:
        await database._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
