"""The tiler runner: its handler against a real demo tile server, and the stage on the stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from rasterio.io import MemoryFile

from amberscan import keys
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.settings import Settings
from amberscan.common.topic_admin import ensure_topics
from amberscan.errors import PoisonMessage
from amberscan.geo.tiles import Tile
from amberscan.imagery.providers import Fetcher, XyzProvider
from amberscan.tiler import demo
from amberscan.tiler.service import make_handler, make_stage
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import decode_image
from tests.streams import read_all


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
        MemoryStore(), {"demo": XyzProvider("http://x/{z}/{x}/{y}", name="demo")}
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
    provider = XyzProvider(demo_url, name="demo")
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


async def test_dates_outside_the_request_dead_letter_the_tile(demo_url: str) -> None:
    request = demo.demo_scan_request("scan-2")
    request.date_from = "2016-01-01"
    provider = XyzProvider(demo_url, Fetcher(), name="demo")
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
    provider = XyzProvider(str(server.make_url("/tiles/")) + "{z}/{x}/{y}.png", name="demo")
    stage = make_stage(stack_settings, store, {"demo": provider})
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack_settings.kafka.bootstrap, enable_idempotence=True
        )
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
