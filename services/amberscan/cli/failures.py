"""How a command that could not reach a server ends: one line naming the server, its address and
the variable that sets it, instead of a traceback (rio and Raster Vision end so).

The clients are recognised by their error classes' names, walking the error's causes, so that
nothing here imports them (`--help` stays instant): Kafka (aiokafka), PostgreSQL (psycopg and
its pool), MinIO (the S3 client's urllib3) and the model server (gRPC).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from amberscan.common.settings import Settings

# Exit status of a command that could not reach a server (2: amberscan refused the input).
UNREACHABLE = 3

_KAFKA = {"KafkaConnectionError", "KafkaTimeoutError", "NodeNotReadyError", "RequestTimedOutError"}
_S3 = {"MaxRetryError", "NewConnectionError", "ConnectTimeoutError", "ProtocolError"}
# The loggers of clients that report each failed attempt at connecting: the command's one line
# says it once (the services, `amberscan serve`, keep them).
CLIENT_LOGGERS = ("aiokafka", "psycopg.pool", "urllib3")


@contextlib.contextmanager
def quiet_clients() -> Iterator[None]:
    """Leave the clients' retries out of a command's output while it runs (its one line names
    the failure); their loggers' levels are as they were afterwards."""
    loggers = [logging.getLogger(name) for name in CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _module(error: BaseException) -> str:
    return type(error).__module__.split(".")[0]


def _postgres_address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"  # never the password


def _postgres_reason(url: str, error: BaseException) -> str:
    """Why PostgreSQL did not answer: a pool's timeout says only that it waited, so one plain
    connection is tried for the server's own words."""
    if type(error).__name__ != "PoolTimeout":
        return _first_line(error)
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as direct:
        return _first_line(direct)
    return _first_line(error)


def _is_s3(error: BaseException, endpoint: str) -> bool:
    """Whether a urllib3 error is the blob store's: other HTTP clients (a STAC catalogue read
    through requests) raise the same classes, and their sources are inputs, not servers."""
    pool = getattr(error, "conn", None) or getattr(error, "pool", None)
    host, port = getattr(pool, "host", None), getattr(pool, "port", None)
    if host is None:
        return False
    wanted = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    return (host, port) == (
        wanted.hostname,
        wanted.port or (443 if wanted.scheme == "https" else 80),
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _details(error: BaseException) -> str:
    """A gRPC error's own words (its `details()`), else its first line."""
    details = getattr(error, "details", None)
    text = details() if callable(details) else None
    return str(text) if text else _first_line(error)


def unreachable(error: BaseException, settings: Settings) -> str | None:
    """The one line of a command that could not reach one of its servers, from the error and its
    causes; None when the error is something else."""
    for cause in _chain(error):
        name, module = type(cause).__name__, _module(cause)
        if module == "aiokafka" and name in _KAFKA:
            bootstrap = settings.kafka.bootstrap
            # `bus.connect` already names the brokers and the protocol: said once.
            reason = _first_line(cause).replace(f"{name}: ", "")
            reason = reason.removeprefix(f"cannot connect to Kafka at {bootstrap} ")
            reason = f" {reason}" if reason.startswith("over ") else f": {reason}"
            return f"cannot reach Kafka at {bootstrap} (AMBERSCAN_KAFKA_BOOTSTRAP){reason}"
        if module in ("psycopg", "psycopg_pool") and name in ("OperationalError", "PoolTimeout"):
            url = settings.database.url
            return (
                f"cannot reach PostgreSQL at {_postgres_address(url)} (AMBERSCAN_DATABASE_URL): "
                f"{_postgres_reason(url, cause)}"
            )
        if module == "urllib3" and name in _S3 and _is_s3(cause, settings.s3.endpoint):
            inner: BaseException = getattr(cause, "reason", None) or cause
            detail = _first_line(inner).rsplit(": ", 1)[-1].rstrip("')\"")
            return (
                f"cannot reach MinIO (S3) at {settings.s3.endpoint} (AMBERSCAN_S3_ENDPOINT): "
                f"{detail}"
            )
        code = getattr(cause, "code", None)
        if module == "grpc" and callable(code) and getattr(code(), "name", "") == "UNAVAILABLE":
            # Its address is in gRPC's own words (a command may name another: --model-server).
            return (
                "cannot reach the model server (AMBERSCAN_MODEL_SERVER, or --model-server): "
                f"{_details(cause)}"
            )
    return None
