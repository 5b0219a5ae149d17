"""A provider answering 503 for ever for one scan tile (#26 defect 3), on the real stack: the
tiler's request for it was rewound and paused without end (no status, the rest of its
partition waiting behind it). Past the bound on its attempts it must end as a failed row of
that tile, its reason naming the attempts and the 503, and the scan's other tiles go on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from amberscan import scanning
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.geo.tiles import Tile
from amberscan.imagery.providers import XyzProvider
from amberscan.sink import service as sink
from amberscan.tiler import demo
from amberscan.tiler.service import make_stage
from amberscan.v1 import messages_pb2 as pb
from tests.sources import local_fetcher
from tests.streams import read_all

pytestmark = pytest.mark.stack


def unavailable_for(scan_tile: Tile) -> web.middleware:
    """A middleware answering 503 to every provider tile inside `scan_tile`."""

    @web.middleware
    async def refuse(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        parts = request.path.removesuffix(".png").split("/")[-3:]
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            z, x, y = (int(p) for p in parts)
            shift = z - scan_tile.z
            if shift >= 0 and (x >> shift, y >> shift) == (scan_tile.x, scan_tile.y):
                return web.Response(status=503, text="Service Unavailable")
        return await handler(request)

    return refuse


async def test_a_provider_answering_503_for_ever_fails_its_tile(
    stack_settings: Settings, database: Database, shared_data: Path
) -> None:
    settings = replace(
        stack_settings,
        kafka={"partitions": 1},  # the stuck request and the others share a partition
        retry={"max_retries": 1, "backoff_s": 0.05, "max_record_attempts": 4},
    )
    await ensure_topics(settings.kafka)
    store = BlobStore(settings.s3)
    await store.ensure_bucket()
    tiles = demo.demo_tiles()
    stuck = tiles[0]
    app = demo.make_app(shared_data / "tiles")
    app.middlewares.append(unavailable_for(stuck))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("/tiles/")) + "{z}/{x}/{y}.png"
    provider = XyzProvider(url, local_fetcher(), name="demo")
    stages = [
        make_stage(settings, store, {"demo": provider}),
        *sink.make_stages(settings, database),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(stage.run(stop)) for stage in stages]
    request = demo.demo_scan_request("scan-endless-503")

    async def rows() -> dict[str, tuple]:
        found = await database.fetch(
            "SELECT tile_id, status, reason FROM scan_tiles WHERE scan_id = %s", request.scan_id
        )
        return {r[0]: r for r in found}

    try:
        await scanning.submit(settings, database, request)
        deadline = time.monotonic() + 90
        while stuck.quadkey not in (found := await rows()):
            assert time.monotonic() < deadline, (
                f"no status for tile {stuck.quadkey}, whose provider answers 503 for ever, "
                f"after 90 s: rows {sorted(found)}"
            )
            assert not any(t.done() for t in tasks), tasks
            await asyncio.sleep(0.2)
        good = await read_all(settings, topics.TILES, expect=len(tiles) - 1)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        await provider.close()
        await server.close()
    _, status, reason = found[stuck.quadkey]
    assert status == "failed" and "gave up after 4 attempts" in reason and "503" in reason, reason
    assert sorted(pb.Tile.FromString(r.value).tile_id for r in good) == sorted(
        t.quadkey for t in tiles if t != stuck
    )
