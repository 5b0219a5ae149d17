"""A web app bad clients cannot stall (#26 defect 9), over real HTTP against the real web app
and PostGIS: slow-reading export clients, a statement stuck behind a lock, one client asking
too much at once, a failure's details, and the built-in credentials.

Slow clients connect from their own loopback addresses (127.0.0.2, ...), as clients on other
hosts would, so the per-client bound is not what keeps the map answering in the first test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from amberscan.common.db import Database
from amberscan.common.settings import DefaultCredentials, Settings, replace
from amberscan.web.app import make_app
from tests.streams import free_port, served
from tests.web.conftest import BBOX, MODEL, TOKEN, Seeded

pytestmark = pytest.mark.stack
COPIES = 5000  # each seeded detection copied: 20,000 rows, an export of ~100 MB


async def multiply(db: Database, copies: int) -> int:
    """Copies of every detection under new tile ids, east of the seeded tiles (an export far
    larger than the sockets' buffers; the map's view of the seeded tiles stays small); the
    number of rows then."""
    async with db.pool.connection() as conn:
        await conn.execute(
            b"INSERT INTO detections SELECT d.tile_id || '-' || g, d.imagery_date, "
            b"d.model_version, d.backbone_version, d.scan_id, d.z, d.x, d.y, d.provider, "
            b"d.flagged, d.positives, d.segment_count, d.min_positives, d.hectares, d.scores, "
            b"d.demo, d.image_key, d.labels_key, "
            b"ST_Translate(d.tile_geom, 1 + (g %% 100) * 0.01, (g / 100) * 0.01), "
            b"ST_Translate(d.positives_geom, 1 + (g %% 100) * 0.01, (g / 100) * 0.01), "
            b"d.detected_at FROM detections d, generate_series(1, %s) g",
            [copies],
        )
        await conn.execute(b"ANALYZE detections")
        cursor = await conn.execute(b"SELECT count(*) FROM detections")
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class SlowClient:
    """An export download that stops reading once its first feature arrived."""

    status: int = 0
    streaming: bool = False
    writer: asyncio.StreamWriter | None = None


async def slow_export(port: int, source: str, path: str = "/api/export.geojson") -> SlowClient:
    """GET `path` from the loopback address `source` with a small receive buffer; read the
    status, then the body until its first row (or the end), then read nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    client = SlowClient(writer=writer)
    status_line = await reader.readline()
    client.status = int(status_line.split()[1]) if status_line else 0
    if client.status != 200:
        return client
    seen = b""
    marker = MODEL.encode()  # in every row, CSV or GeoJSON; not in the head
    while marker not in seen:
        chunk = await reader.read(4096)
        if not chunk:
            return client  # cut by the server
        seen = seen[-64:] + chunk
    client.streaming = True
    return client


@contextlib.asynccontextmanager
async def slow_clients(port: int, n: int, path: str, same: bool = False) -> AsyncIterator[list]:
    """`n` slow export clients (each from its own loopback address unless `same`), settled:
    each is streaming, refused or cut; closed after the block."""
    sources = ["127.0.0.2"] * n if same else [f"127.0.0.{2 + i}" for i in range(n)]
    tasks = [asyncio.create_task(slow_export(port, s, path)) for s in sources]
    try:
        _, pending = await asyncio.wait(tasks, timeout=60)
        assert not pending, f"{len(pending)} of {n} downloads neither started nor were refused"
        yield [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
            if task.done() and not task.cancelled() and task.exception() is None:
                writer = task.result().writer
                if writer is not None:
                    writer.close()


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, int, str]:
    started = time.perf_counter()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=20)) as r:
            body = await r.read()
            return time.perf_counter() - started, r.status, body[:200].decode(errors="replace")
    except TimeoutError:
        return time.perf_counter() - started, 0, "no answer in 20 s"


# The sessions of downloads still open: a cursor's FETCH, idle in its transaction.
HELD = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = "
    "'idle in transaction' AND query ~ '^FETCH FORWARD .* FROM \"amberscan_(export|diff)\"' "
    "AND backend_start >= %s"
)


@pytest.fixture
async def released(seeded: Seeded) -> AsyncIterator[None]:
    """After the test (its app closed, its clients gone), no download still holds a database
    connection; any that does is ended (so the schema can be dropped) and the test fails."""
    started = await seeded.db.fetch("SELECT now()")
    yield
    deadline = time.monotonic() + 15
    while (held := await seeded.db.fetch(HELD, started[0][0])) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    for (pid,) in held:
        await seeded.db.fetch("SELECT pg_terminate_backend(%s)", pid)
    assert not held, f"{len(held)} cut downloads still held their database connection"


@pytest.fixture
async def many(seeded: Seeded, released: None) -> Seeded:
    assert await multiply(seeded.db, COPIES) == 4 * (COPIES + 1)
    return seeded


async def test_slow_export_clients_do_not_stall_the_map(many: Seeded) -> None:
    """Ten clients start a large export each and stop reading: the map's other requests (the
    detections in view, a detail vector tile) must still answer within a second."""
    port = free_port()
    settings = replace(many.settings, web={"port": port, "statement_timeout_s": 5})
    light = [
        f"/api/detections?bbox={BBOX}&limit=10",
        "/tiles/detections/16/37626/22003.mvt",
    ]
    async with served(make_app(settings), port) as base:
        async with slow_clients(port, 10, "/api/export.geojson") as clients:
            streaming = sum(c.streaming for c in clients)
            statuses = sorted(c.status for c in clients)
            times: list[float] = []
            answers: list[tuple[int, str]] = []
            async with aiohttp.ClientSession() as session:
                for i in range(10):
                    seconds, status, body = await timed_get(session, base + light[i % 2])
                    times.append(seconds)
                    answers.append((status, body))
                    if seconds > 1 or status != 200:
                        break
    p95 = sorted(times)[max(0, round(0.95 * (len(times) - 1)))]
    assert p95 < 1 and all(s == 200 for s, _ in answers), (
        f"with {streaming} of 10 slow export clients holding their download (statuses "
        f"{statuses}), the map's requests took {[round(t, 1) for t in times]} s: {answers[-1]}"
    )
    assert streaming >= 1  # the exports still work, within their own budget


async def test_a_statement_stuck_behind_a_lock_is_cut(seeded: Seeded) -> None:
    """A summary waiting on a lock (a migration, a VACUUM FULL) is cut at the statement
    timeout and answered 503 with a message, instead of holding a connection for as long."""
    port = free_port()
    settings = replace(seeded.settings, web={"port": port, "statement_timeout_s": 1})
    async with served(make_app(settings), port) as base:
        async with seeded.db.pool.connection() as locker, locker.transaction():
            await locker.execute(b"LOCK TABLE detections IN ACCESS EXCLUSIVE MODE")
            async with aiohttp.ClientSession() as session:
                answers = [
                    await timed_get(session, base + path)
                    for path in (
                        f"/api/detections?bbox={BBOX}",
                        f"/tiles/detections/6/36/21.mvt?change=changed&year=2015&model={MODEL}",
                    )
                ]
    for seconds, status, body in answers:
        assert status == 503 and seconds < 5, (
            f"no statement timeout: the request behind the lock answered {status} after "
            f"{seconds:.1f} s ({body})"
        )
        assert "AMBERSCAN_WEB_STATEMENT_TIMEOUT_S" in body, body


async def test_one_client_runs_a_bounded_number_of_heavy_requests(
    seeded: Seeded, released: None
) -> None:
    """From one address, three slow exports at once: two run, the third is refused (429)."""
    port = free_port()
    settings = replace(
        seeded.settings,
        web={"port": port, "statement_timeout_s": 1, "export_connections": 4},
    )
    await multiply(seeded.db, 2000)
    async with (
        served(make_app(settings), port),
        slow_clients(port, 3, "/api/export.csv", same=True) as clients,
    ):
        statuses = sorted(c.status for c in clients)
    assert statuses == [200, 200, 429], f"one client's three exports at once: {statuses}"


async def test_a_500_names_no_host_and_carries_a_request_id(
    seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    """The blob store unreachable: the answer says so generically, with a request id; the
    details (its host and port, the blob's key) go to the log under the same id."""
    port, dead = free_port(), free_port()
    settings = replace(seeded.settings, web={"port": port}, s3={"endpoint": f"127.0.0.1:{dead}"})
    tile_id = seeded.tiles["positive1"].tile_id
    caplog.set_level(logging.WARNING)
    async with (
        served(make_app(settings), port) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/tiles/{tile_id}/overlay.png") as r,
    ):
        status, body, header = r.status, await r.text(), r.headers.get("X-Request-Id", "")
    assert status >= 500
    assert str(dead) not in body and "127.0.0.1" not in body and "tiles/" not in body, body
    assert header and header in body, f"no request id in the answer: {body}"
    logged = [r.getMessage() for r in caplog.records if header in r.getMessage()]
    assert any(str(dead) in m for m in logged), caplog.text[-2000:]


def test_built_in_credentials_refused_outside_the_demo(base_settings: Settings) -> None:
    """Outside the demo (AMBERSCAN_DEMO unset) the web app does not start on the built-in
    database URL (postgres, no password), MinIO secret or the examples' `change-me` token."""
    built_in = replace(
        base_settings,
        ops={"demo": False},
        database={"url": "postgresql://postgres@127.0.0.1:15432/amberscan"},
        s3={"secret_key": "amberscan-secret"},
        web={"token": "change-me"},
    )
    with pytest.raises(DefaultCredentials) as refused:
        make_app(built_in)
    message = str(refused.value)
    for variable in ("AMBERSCAN_DATABASE_URL", "AMBERSCAN_S3_SECRET_KEY", "AMBERSCAN_WEB_TOKEN"):
        assert variable in message, message
    assert "AMBERSCAN_DEMO" in message
    make_app(replace(built_in, ops={"demo": True}))  # the demo stack may
    own = replace(
        built_in,
        database={"url": "postgresql://amberscan:s3cret-pw@db.example:5432/amberscan"},
        s3={"secret_key": "a-real-secret-of-its-own"},
        web={"token": TOKEN},
    )
    make_app(own)  # production's own credentials
