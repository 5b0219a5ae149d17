"""What a database failure means to a stream, by its SQLSTATE (#26 defect 3): the classes that
pass by themselves are retried, the rest are not, `OperationalError`s included."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from amberscan.common.db import Database, is_transient


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        ("08006", True),  # connection failure
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock
        ("53100", True),  # disk full: the server's state; bounded by the stage (see is_transient)
        ("53200", True),  # out of memory
        ("53300", True),  # too many connections
        ("57P01", True),  # admin shutdown
        ("57014", True),  # statement timeout
        ("25006", True),  # read-only transaction (a failover's standby)
        ("58030", False),  # I/O error: an OperationalError that a retry does not change
        ("XX001", False),  # data corrupted
        ("22012", False),  # division by zero
        ("23505", False),  # unique violation
        ("42P01", False),  # undefined table
    ],
)
def test_a_database_error_is_transient_by_its_sqlstate(sqlstate: str, transient: bool) -> None:
    error = errors.lookup(sqlstate)(f"SQLSTATE {sqlstate}")
    assert is_transient(error) is transient


def test_an_error_without_a_sqlstate_is_transient_only_when_operational() -> None:
    assert is_transient(psycopg.OperationalError("connection lost"))
    assert not is_transient(psycopg.ProgrammingError("cursor closed"))
    assert not is_transient(ValueError("not a database error"))


@pytest.mark.stack
async def test_real_server_errors_classed(database: Database) -> None:
    """A statement timeout from the real server is retried, a division by zero is not."""
    with pytest.raises(errors.QueryCanceled) as cancelled:
        async with database.pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = '10ms'")
            await conn.execute("SELECT pg_sleep(1)")
    assert is_transient(cancelled.value)
    with pytest.raises(errors.DivisionByZero) as division:
        await database.fetch("SELECT 1 / 0")
    assert not is_transient(division.value)
