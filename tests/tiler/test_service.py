"""The tiler runner: its handler against a real demo tile server, and the stage on the stack."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from rasterio.errors import CRSError
from rasterio.io import MemoryFile
from shapely import geometry as sg
from shapely.errors import GEOSException

from amberscan import keys, scanning
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.bus import client_options
from amberscan.common.db import Database
from amberscan.common.records import Failure
from amberscan.common.settings import Settings
from amberscan.common.topic_admin import ensure_topics
from amberscan.errors import PoisonMessage
from amberscan.geo.tiles import Tile, tiles_for_region
from amberscan.imagery.providers import ScanImage, XyzProvider
from amberscan.sink import service as sink
from amberscan.tiler import demo
from amberscan.tiler.core import plan_scan, split_request
from amberscan.tiler.service import describe_request, make_handler, make_stage
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import decode_image
from tests.sources import local_fetcher
from tests.streams import produce, read_all


class MemoryStore:
    """A dict-backed blob store with the content-addressed `put` of BlobStore."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, data: bytes, kind: str, ext: str, content_type: str = "") -> str:
        key = keys.content_key(kind, data, ext)
        self.objects[key] = data
        return key


def record(request: pb.ScanRequest | bytes, offset: int = 0) -> ConsumerRecord:
    value = request if isinstance(request, bytes) else request.SerializeToString()
    return ConsumerRecord(
        topic="scan-requests",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"scan",
        value=value,
        checksum=None,
        serialized_key_size=4,
        serialized_value_size=len(value),
        headers=[],
    )


@pytest.fixture
async def demo_url(shared_data: Path) -> AsyncIterator[str]:
    """A demo tile server on loopback, with one child tile of the 3rd scan tile missing."""
    app = demo.make_app(shared_data / "tiles")
    hole = demo.demo_tiles()[2]

    @web.middleware
    async def missing(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path == f"/tiles/18/{hole.x * 4 + 1}/{hole.y * 4 + 2}.png":
            raise web.HTTPNotFound()
        return await handler(request)

    app.middlewares.append(missing)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield str(server.make_url("/tiles/")) + "{z}/{x}/{y}.png"
    await server.close()


async def handle_scan(handle, request: pb.ScanRequest) -> list:  # type: ignore[no-untyped-def]
    """A region request through the handler: its one-tile requests, then each of them."""
    split = await handle(record(request))
    assert {o.topic for o in split} == {topics.SCAN_REQUESTS}
    outputs = []
    for i, one in enumerate(split):
        outputs += await handle(record(one.value, offset=i + 1))
    return outputs


async def test_a_region_is_split_into_one_request_per_scan_tile() -> None:
    request = demo.demo_scan_request("scan-9")
    split = await make_handler(
        MemoryStore(), {"demo": XyzProvider("http://x/{z}/{x}/{y}", local_fetcher(), name="demo")}
    )(record(request))
    ones = [pb.ScanRequest.FromString(o.value) for o in split]
    assert [o.key for o in split] == [one.tile.quadkey.encode() for one in ones]
    assert sorted(one.tile.quadkey for one in ones) == sorted(t.quadkey for t in demo.demo_tiles())
    for one in ones:
        assert (one.scan_id, one.tiles_expected, one.provider, one.demo) == (
            "scan-9",
            8,
            "demo",
            True,
        )
        assert (one.zoom, one.fetch_zoom) == (16, 18) and one.WhichOneof("region") == "tile"


async def test_handler_outputs_tiles_and_a_dead_letter_for_the_missing_one(
    demo_url: str, shared_data: Path
) -> None:
    store = MemoryStore()
    provider = XyzProvider(demo_url, local_fetcher(), name="demo")
    handle = make_handler(store, {"demo": provider})
    try:
        outputs = await handle_scan(handle, demo.demo_scan_request("scan-1"))
    finally:
        await provider.close()
    tiles = [pb.Tile.FromString(o.value) for o in outputs if o.topic == topics.TILES]
    letters = [pb.DeadLetter.FromString(o.value) for o in outputs if o.topic == topics.DEAD_LETTERS]
    hole = demo.demo_tiles()[2]
    assert len(tiles) == 7 and len(letters) == 1
    assert (letters[0].tile_id, letters[0].scan_id) == (hole.quadkey, "scan-1")
    assert f"/tiles/18/{hole.x * 4 + 1}/{hole.y * 4 + 2}.png: 404" in letters[0].reason
    images = demo.demo_images(shared_data / "tiles")
    for output, tile in zip((o for o in outputs if o.topic == topics.TILES), tiles, strict=True):
        assert output.key == tile.tile_id.encode()
        assert (tile.scan_id, tile.provider, tile.demo, tile.tiles_expected) == (
            "scan-1",
            "demo",
            True,
            8,
        )
        assert (tile.width, tile.height, tile.imagery_date) == (1024, 1024, demo.DEMO_IMAGERY_DATE)
        image = decode_image(store.objects[tile.image_key], tile.image_key)
        source = next(t for t in images if t.quadkey == tile.tile_id)
        assert np.array_equal(image, images[source])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\xff\xfe not a protobuf", "not a ScanRequest"),
        (
            pb.ScanRequest(scan_id="s", bbox=pb.BoundingBox(west=5, south=1, east=4, north=2)),
            "invalid region",
        ),
        (pb.ScanRequest(scan_id="s", geojson="{}", provider="sentinel"), "invalid region"),
        (
            demo.demo_scan_request("s").SerializeToString().replace(b"demo", b"nope"),
            "unknown imagery provider",
        ),
    ],
)
async def test_bad_requests_are_poison(value, message: str) -> None:
    handle = make_handler(MemoryStore(), {})
    with pytest.raises(PoisonMessage, match=message):
        await handle(record(value))


def test_a_one_tile_request_is_described_by_its_tile() -> None:
    """A failure the loop dead-letters (outside the tile's own handling) still names the tile of
    a one-tile request, so the sink fails that tile rather than the whole request."""
    request = demo.demo_scan_request("scan-3")
    [one] = split_request(request, plan_scan(request, "demo"))[:1]
    assert describe_request(record(one)) == Failure(tile_id=one.tile.quadkey, scan_id="scan-3")
    assert describe_request(record(request)) == Failure(scan_id="scan-3")


async def test_dates_outside_the_request_dead_letter_the_tile(demo_url: str) -> None:
    request = demo.demo_scan_request("scan-2")
    request.date_from = "2016-01-01"
    provider = XyzProvider(demo_url, local_fetcher(), name="demo")
    try:
        outputs = await handle_scan(make_handler(MemoryStore(), {"demo": provider}), request)
    finally:
        await provider.close()
    letters = [pb.DeadLetter.FromString(o.value) for o in outputs]
    assert {o.topic for o in outputs} == {topics.DEAD_LETTERS} and len(letters) == 8
    assert sum("outside the requested 2016-01-01" in letter.reason for letter in letters) == 7


@pytest.mark.stack
async def test_stage_scans_the_demo_area(stack_settings: Settings, shared_data: Path) -> None:
    await ensure_topics(stack_settings.kafka)
    store = BlobStore(stack_settings.s3)
    await store.ensure_bucket()
    server = TestServer(demo.make_app(shared_data / "tiles"), host="127.0.0.1", port=0)
    await server.start_server()
    provider = XyzProvider(
        str(server.make_url("/tiles/")) + "{z}/{x}/{y}.png", local_fetcher(), name="demo"
    )
    stage = make_stage(stack_settings, store, {"demo": provider})
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        producer = AIOKafkaProducer(**client_options(stack_settings.kafka), enable_idempotence=True)
        await producer.start()
        try:
            name = topics.topic_name(stack_settings.kafka.topic_prefix, topics.SCAN_REQUESTS)
            bad = pb.ScanRequest(
                scan_id="bad", bbox=pb.BoundingBox(west=5, south=1, east=4, north=2)
            )
            await producer.send_and_wait(name, bad.SerializeToString(), key=b"bad")
            request = demo.demo_scan_request("stack-demo")
            await producer.send_and_wait(name, request.SerializeToString(), key=b"stack-demo")
        finally:
            await producer.stop()
        out = await read_all(stack_settings, topics.TILES, expect=8, timeout=60)
        letters = await read_all(stack_settings, topics.DEAD_LETTERS, expect=1, timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await provider.close()
        await server.close()
    tiles = [pb.Tile.FromString(r.value) for r in out]
    assert sorted(t.tile_id for t in tiles) == sorted(t.quadkey for t in demo.demo_tiles())
    assert all(r.key == pb.Tile.FromString(r.value).tile_id.encode() for r in out)
    images = demo.demo_images(shared_data / "tiles")
    for tile in tiles:
        assert tile.scan_id == "stack-demo" and tile.demo and tile.tiles_expected == 8
        # Stored as a lossless GeoTIFF on the scan tile's web-mercator bounds.
        assert tile.image_key.endswith(".tif")
        data = await store.get(tile.image_key)
        place = Tile(tile.tile.x, tile.tile.y, tile.tile.z)
        np.testing.assert_array_equal(decode_image(data, tile.image_key), images[place])
        with MemoryFile(data) as memory, memory.open() as dataset:
            assert dataset.crs.to_epsg() == 3857
            assert dataset.bounds == pytest.approx(place.xy_bounds())
    assert len(await store.list(keys.TILE_IMAGES + "/")) == 8
    [letter] = [pb.DeadLetter.FromString(r.value) for r in letters]
    assert letter.scan_id == "bad" and letter.tile_id == "" and "invalid region" in letter.reason


class Faulty:
    """The demo provider, but some scan tiles raise an error no provider is meant to raise (a
    raster whose CRS cannot be read, a GEOS failure, a file the service may not open)."""

    name = "demo"

    def __init__(self, inner: XyzProvider, faults: dict[Tile, Exception]) -> None:
        self.inner = inner
        self.faults = faults

    async def scan_image(self, scan_tile: Tile, fetch_zoom: int, vintage: str = "") -> ScanImage:
        if scan_tile in self.faults:
            raise self.faults[scan_tile]
        return await self.inner.scan_image(scan_tile, fetch_zoom, vintage)

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.stack
async def test_an_unexpected_provider_error_fails_its_tile_not_the_request(
    stack_settings: Settings, database: Database, shared_data: Path
) -> None:
    """#26 defect 2: an error outside PoisonMessage/InvalidInput in a one-tile request must end
    as a failed row of that tile, not as the request's failure (a row with an empty tile id,
    which the summary reads as "the request failed" and completes on)."""
    settings = stack_settings
    await ensure_topics(settings.kafka)
    store = BlobStore(settings.s3)
    await store.ensure_bucket()
    tiles = demo.demo_tiles()
    faults: dict[Tile, Exception] = {
        tiles[0]: CRSError("Invalid projection: EPSG:99999"),
        tiles[1]: GEOSException("TopologyException: side location conflict at 26.8 51.2"),
        tiles[2]: PermissionError(13, "Permission denied", "/imagery/2015/cog.tif"),
    }
    server = TestServer(demo.make_app(shared_data / "tiles"), host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("/tiles/")) + "{z}/{x}/{y}.png"
    provider = Faulty(XyzProvider(url, local_fetcher(), name="demo"), faults)
    stages = [
        make_stage(settings, store, {"demo": provider}),
        *sink.make_stages(settings, database),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(stage.run(stop)) for stage in stages]
    request = demo.demo_scan_request("scan-unexpected")

    async def rows() -> list[tuple]:
        return await database.fetch(
            "SELECT tile_id, status, flagged, hectares, reason FROM scan_tiles WHERE scan_id = %s",
            request.scan_id,
        )

    try:
        expected = await scanning.submit(settings, database, request)
        deadline = time.monotonic() + 60
        faulty = {t.quadkey for t in faults}
        # Until each faulty tile has its row, or the request got one (the defect).
        while not ("" in (ids := {r[0] for r in await rows()}) or faulty <= ids):
            assert time.monotonic() < deadline, f"no status for the faulty tiles: {ids}"
            assert not any(t.done() for t in tasks), tasks
            await asyncio.sleep(0.2)
        found = await rows()
        good = await read_all(settings, topics.TILES, expect=len(tiles) - len(faults))
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        await provider.close()
        await server.close()
    by_tile = {r[0]: r for r in found}
    assert "" not in by_tile, f"a tile's failure was recorded as the request's: {by_tile['']}"
    for tile, error in faults.items():
        _, status, _, _, reason = by_tile[tile.quadkey]
        assert status == "failed", (tile, status)
        assert reason.startswith(f"tiler: scan tile {tile.quadkey}") and str(error) in reason, (
            tile,
            reason,
        )
    summary = scanning.summarize(request.scan_id, expected, found, 0.0)
    assert summary.error == "" and summary.failed == len(faults), summary
    # The other tiles of the scan went on.
    assert sorted(pb.Tile.FromString(r.value).tile_id for r in good) == sorted(
        t.quadkey for t in tiles if t not in faults
    )


def jagged_region(vertices: int, lon: float = 26.0, lat: float = 51.0) -> sg.Polygon:
    """A valid star-like polygon of `vertices` vertices (to 10 cm), about 0.4° across."""
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    radius = 0.12 * (1 + 0.15 * np.sin(angles * 37)) * np.where(np.arange(vertices) % 2, 0.97, 1)
    points = np.column_stack([lon + 1.6 * radius * np.cos(angles), lat + radius * np.sin(angles)])
    return sg.Polygon(np.round(points, 6))


@pytest.mark.stack
async def test_a_region_of_forty_thousand_vertices_does_not_stall_the_stage(
    stack_settings: Settings,
) -> None:
    """#26 defect 7: a region polygon of 10⁴–10⁵ vertices (here 4·10⁴, what fits in a Kafka
    message of 1 MB), tested tile by tile without a prepared
    geometry on the event loop, held the loop for seconds (heartbeats missed, the request hops
    between replicas). The stage splits it while its loop keeps turning."""
    settings = stack_settings
    await ensure_topics(settings.kafka)
    store = BlobStore(settings.s3)
    await store.ensure_bucket()
    region = jagged_region(40_000)
    expected = await asyncio.to_thread(tiles_for_region, region, 16)
    assert region.is_valid and len(expected) > 4000
    request = pb.ScanRequest(
        scan_id="scan-huge", geojson=json.dumps(sg.mapping(region)), provider="demo"
    )
    stage = make_stage(
        settings, store, {"demo": XyzProvider("http://127.0.0.1:9/{z}/{x}/{y}", local_fetcher())}
    )
    stop = asyncio.Event()
    gaps = [0.0]

    async def tick() -> None:  # the loop's longest pause between two turns
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tasks = [asyncio.create_task(stage.run(stop)), asyncio.create_task(tick())]
    try:
        await produce(settings, topics.SCAN_REQUESTS, [(b"scan-huge", request.SerializeToString())])
        records = await read_all(
            settings, topics.SCAN_REQUESTS, expect=1 + len(expected), timeout=120
        )
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    ones = [pb.ScanRequest.FromString(r.value) for r in records[1:]]
    assert sorted(one.tile.quadkey for one in ones) == sorted(t.quadkey for t in expected)
    assert all(one.WhichOneof("region") == "tile" for one in ones)
    # Inside aiokafka's 3 s heartbeat interval, with room for a loaded machine (before: 4.9 s).
    assert max(gaps) < 2.0, f"the event loop stalled {max(gaps):.1f} s"
