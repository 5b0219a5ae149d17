"""PostgreSQL/PostGIS access: a connection pool bound to one schema, and the schema itself.

The pool checks each connection before lending it, so after a server restart the first query
gets a fresh connection instead of a dead one. `database_errors` says what a failure means to
a stream: the server unreachable, restarting or read-only is transient (retry), a row the
database rejects is poison (dead-letter it). `fetch` and `execute` raise the transient ones as `TransientError`,
so a stage that reads the database (the tiler's scan history) retries instead of failing tiles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from amberscan.common.settings import DatabaseConfig
from amberscan.errors import PoisonMessage, TransientError

# How long a caller waits for a pooled connection (the server down: then a TransientError).
CONNECTION_WAIT_S = 10.0


# SQLSTATE classes and codes of failures that pass without a change to the data (#26 defect 3):
# the connection (08), a transaction a concurrent one rolled back (40: serialization failure,
# deadlock), the server short of resources (53: disk full, out of memory, too many
# connections), an operator or a shutdown (57P01-57P03), a cancelled statement or a statement
# timeout (57014), a lock not available (55P03), a read-only server after a failover (25006).
# Every other SQLSTATE is permanent, `OperationalError`s included (58xxx system errors, XX
# internal ones, 28xxx a refused login): a retry gives the same answer.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53"})
TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57014", "55P03", "25006"})


def is_transient(error: BaseException) -> bool:
    """Whether a database failure may pass, by its SQLSTATE (`TRANSIENT_SQLSTATE_CLASSES`,
    `TRANSIENT_SQLSTATES`); an `OperationalError` without one is the server not answering (a
    lost connection, a pool timeout), transient too.

    Disk full (53100) is transient: the server's state, not the record's, is at fault, and the
    record succeeds once space is freed; failing it at once would fail every tile of the stream
    within seconds (and their statuses could not be written to the full disk either). It is not
    hammered: the stage pauses the partition with a doubling backoff between rounds, and past
    `AMBERSCAN_MAX_RECORD_ATTEMPTS` or `AMBERSCAN_MAX_RECORD_AGE_S` the record is
    dead-lettered."""
    if not isinstance(error, psycopg.Error):
        return False
    state = error.sqlstate
    if state is None:
        return isinstance(error, psycopg.OperationalError)
    return state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES


@contextlib.contextmanager
def transient_errors(what: str) -> Iterator[None]:
    """Raise the block's transient database failures as `TransientError`, naming `what`."""
    try:
        yield
    except psycopg.Error as error:
        if is_transient(error):
            raise TransientError(f"database unavailable ({what}): {error}") from error
        raise


@contextlib.contextmanager
def database_errors(what: str) -> Iterator[None]:
    """Raise the database failures of the block as amberscan's errors, naming `what`.

    Raises:
        TransientError: the server did not answer, or a concurrent transaction won (retry).
        PoisonMessage: the database rejected the data itself (a bad value or geometry).
    """
    try:
        with transient_errors(what):
            yield
    except psycopg.Error as error:
        if isinstance(
            error, psycopg.DataError | psycopg.IntegrityError | psycopg.errors.InternalError_
        ):
            raise PoisonMessage(f"{what}: rejected by PostGIS ({error})") from None
        raise


class Database:
    """An async pool whose connections search `schema` first, then `public` (PostGIS)."""

    def __init__(
        self,
        database: DatabaseConfig,
        schema: str | None = None,
        *,
        max_size: int = 8,
        statement_timeout_s: float | None = None,
        wait_s: float = CONNECTION_WAIT_S,
    ) -> None:
        """A pool of at most `max_size` connections, each statement cut after
        `statement_timeout_s` when given (the server's `statement_timeout`); a caller waits at
        most `wait_s` for a connection."""
        self.schema = schema or database.schema_name
        self.statement_timeout_ms = round(statement_timeout_s * 1000) if statement_timeout_s else 0
        self.pool = AsyncConnectionPool(
            database.url,
            min_size=1,
            max_size=max_size,
            open=False,
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,
            timeout=wait_s,
            kwargs={"autocommit": True},
        )

    async def _configure(self, conn: AsyncConnection[Any]) -> None:
        await conn.execute(
            sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema))
        )
        if self.statement_timeout_ms:
            await conn.execute(
                sql.SQL("SET statement_timeout = {}").format(sql.Literal(self.statement_timeout_ms))
            )

    async def open(self, migrate: bool = True) -> None:
        """Open the pool and (unless not to `migrate`) create the schema and tables if missing."""
        await self.pool.open(wait=True, timeout=30)
        if migrate:
            await self.migrate()

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def migrate(self) -> None:
        """Create the schema and its tables (idempotent)."""
        ddl = resources.files("amberscan.common").joinpath("schema.sql").read_text()
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = 0")  # not a request's statement
            # Services start together; concurrent CREATE ... IF NOT EXISTS can still collide.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('amberscan-migrate'))")
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            await conn.execute(ddl.encode())

    async def drop_schema(self) -> None:
        """Drop the schema and everything in it (tests clean up with this)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    async def fetch(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of `query` with positional `%s` parameters.

        Raises:
            TransientError: the server did not answer (a stage retries the record).
        """
        with transient_errors("query"):
            async with self.pool.connection() as conn:
                cursor = await conn.execute(query.encode(), params)
                return await cursor.fetchall()

    async def execute(self, query: str, *params: Any) -> None:
        """Run `query` with positional `%s` parameters (TransientError as `fetch`)."""
        with transient_errors("statement"):
            async with self.pool.connection() as conn:
                await conn.execute(query.encode(), params)
