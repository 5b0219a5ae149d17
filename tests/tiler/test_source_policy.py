"""A scan request whose XYZ template points at an internal address (#26 defect 8), on the real
stack with the real tiler (its providers made from the settings, as `amberscan serve tiler`
makes them) and the real sink: the tiler fetched whatever a request named. Now the tile the
source would have fed ends failed with a dead letter naming the source and the rule, nothing
is fetched from that server, and the stream goes on: the next scan, on a listed host, is
tiled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from amberscan import scanning
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.geo.tiles import Tile
from amberscan.sink import service as sink
from amberscan.tiler import demo
from amberscan.tiler.service import make_stage
from amberscan.v1 import messages_pb2 as pb
from tests.imagery.test_source_policy import ALLOWED, INTERNAL, counted, serve
from tests.streams import read_all

pytestmark = pytest.mark.stack


def one_tile_request(scan_id: str, tile: Tile, template: str) -> pb.ScanRequest:
    """A scan of exactly `tile` from the XYZ `template` a client put on the bus."""
    w, s, e, n = tile.bounds()
    inset = (e - w) / 8
    return pb.ScanRequest(
        scan_id=scan_id,
        bbox=pb.BoundingBox(west=w + inset, south=s + inset, east=e - inset, north=n - inset),
        zoom=tile.z,
        fetch_zoom=demo.DEMO_FETCH_ZOOM,
        provider="xyz",
        sources=[template],
    )


async def test_an_xyz_source_on_an_unlisted_internal_server_fails_its_tile(
    stack_settings: Settings, database: Database, shared_data: Path
) -> None:
    settings = replace(
        stack_settings,
        kafka={"partitions": 1},  # the refused request and the next share a partition
        imagery={"source_schemes": "https,http", "source_allowed_hosts": f"*,{ALLOWED}"},
    )
    await ensure_topics(settings.kafka)
    store = BlobStore(settings.s3)
    await store.ensure_bucket()
    refused_tile, good_tile = demo.demo_tiles()[:2]
    inside_seen: list[str] = []
    stages = [make_stage(settings, store), *sink.make_stages(settings, database)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(stage.run(stop)) for stage in stages]
    tiles_app = demo.make_app(shared_data / "tiles")
    try:
        async with (
            serve(counted(demo.make_app(shared_data / "tiles"), inside_seen), INTERNAL) as inside,
            serve(tiles_app, ALLOWED) as outside,
        ):
            template = f"{inside}/tiles/{{z}}/{{x}}/{{y}}.png"
            refused = one_tile_request("scan-internal-source", refused_tile, template)
            good = one_tile_request(
                "scan-listed-source", good_tile, f"{outside}/tiles/{{z}}/{{x}}/{{y}}.png"
            )
            await scanning.submit(settings, database, refused)
            await scanning.submit(settings, database, good)
            deadline = time.monotonic() + 60
            while not (
                found := await database.fetch(
                    "SELECT tile_id, status, reason FROM scan_tiles WHERE scan_id = %s",
                    refused.scan_id,
                )
            ):
                produced = await read_all(settings, topics.TILES, expect=2, timeout=0.5)
                assert time.monotonic() < deadline, (
                    f"no status for tile {refused_tile.quadkey}, whose source is the unlisted "
                    f"{inside}, after 60 s; tiles produced: "
                    f"{sorted(pb.Tile.FromString(r.value).tile_id for r in produced)}; "
                    f"requests it served: {len(inside_seen)}"
                )
                assert not any(t.done() for t in tasks), tasks
            tiled = await read_all(settings, topics.TILES, expect=1)
            letters = await read_all(settings, topics.DEAD_LETTERS, expect=1)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    rule = f"refused: {INTERNAL} is loopback and not in AMBERSCAN_SOURCE_ALLOWED_HOSTS"
    ((tile_id, status, reason),) = found
    assert (tile_id, status) == (refused_tile.quadkey, "failed"), found
    assert f"source {inside}/tiles/" in reason and rule in reason, reason
    (letter,) = [pb.DeadLetter.FromString(r.value) for r in letters]
    assert letter.tile_id == refused_tile.quadkey and rule in letter.reason, letter
    assert inside_seen == [], f"the internal server was fetched from: {inside_seen[:3]}"
    # The stream went on: the scan after it, on a listed host, was tiled.
    assert [pb.Tile.FromString(r.value).tile_id for r in tiled] == [good_tile.quadkey]
