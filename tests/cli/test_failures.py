"""A command that cannot reach a server ends in one line naming it, its address and the variable
that sets it, with exit status 3, not a traceback. The servers are closed loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from amberscan.cli import failures
from amberscan.common.settings import Settings, environment, replace
from tests.streams import free_port

AMBERSCAN = [sys.executable, "-m", "amberscan.cli"]


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AMBERSCAN, *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == failures.UNREACHABLE, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    return done.stderr.strip()


def test_a_scan_against_an_unreachable_kafka_is_one_line() -> None:
    port = free_port()
    line = one_line(run(["scan", "--demo"], {"AMBERSCAN_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}))
    assert line.startswith(f"amberscan: error: cannot reach Kafka at 127.0.0.1:{port} ")
    assert "(AMBERSCAN_KAFKA_BOOTSTRAP)" in line


@pytest.mark.stack
async def test_a_scan_against_an_unreachable_database_is_one_line(
    stack_settings: Settings,
) -> None:
    """Kafka answers (the test's own topics); PostgreSQL does not: named without its password."""
    port = free_port()
    url = f"postgresql://amberscan:hidden-secret@127.0.0.1:{port}/amberscan"
    settings = replace(stack_settings, database={"url": url})
    line = one_line(run(["scan", "--demo"], environment(settings)))
    assert line.startswith(f"amberscan: error: cannot reach PostgreSQL at 127.0.0.1:{port} ")
    assert "(AMBERSCAN_DATABASE_URL)" in line and "Connection refused" in line
    assert "hidden-secret" not in line


def test_an_unreachable_blob_store_is_one_line() -> None:
    port = free_port()
    line = one_line(run(["models", "list"], {"AMBERSCAN_S3_ENDPOINT": f"127.0.0.1:{port}"}))
    assert line.startswith(f"amberscan: error: cannot reach MinIO (S3) at 127.0.0.1:{port} ")
    assert "Connection refused" in line


def test_an_unreachable_model_server_is_named_from_grpcs_error() -> None:
    import grpc
    from grpc.aio import AioRpcError, Metadata

    error = AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        Metadata(),
        Metadata(),
        details="failed to connect to all addresses; last error: ipv4:127.0.0.1:9: refused",
    )
    wrapped = RuntimeError("feature vectors")
    wrapped.__cause__ = error
    line = failures.unreachable(wrapped, Settings())
    assert line is not None and line.startswith("cannot reach the model server")
    assert "127.0.0.1:9" in line
    assert failures.unreachable(RuntimeError("a bug"), Settings()) is None


def test_an_unreadable_file_is_one_line() -> None:
    done = run(["scan", "--geojson", "/nonexistent/region.geojson"], {})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "/nonexistent/region.geojson: No such file or directory" in done.stderr
