"""The scanned imagery as map tiles against the real stack: the stored scan tiles (GeoTIFFs in
MinIO, as the tiler stores them) drawn at their place, per vintage and scan."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image

from amberscan import keys
from amberscan.geo.tiles import Tile
from amberscan.vision.imageio import encode_tile, read_image
from amberscan.web import imagery
from tests.web.client import fetch, get
from tests.web.conftest import TILES, Seeded

pytestmark = pytest.mark.stack


async def store_geotiffs(seeded: Seeded, shared_data: Path) -> dict[str, np.ndarray]:
    """Store the four tiles' images as the tiler does (a GeoTIFF at the scan tile's bounds)
    and point their detections at them; returns each image as stored (RGB)."""
    images = {}
    for name, (tile, _, _) in TILES.items():
        image = read_image(shared_data / "tiles" / f"{name}.png")
        data = await asyncio.to_thread(encode_tile, image, tile.xy_bounds())
        key = await seeded.store.put(data, keys.TILE_IMAGES, "tif", "image/tiff")
        await seeded.db.execute(
            "UPDATE detections SET image_key = %s WHERE tile_id = %s", key, tile.quadkey
        )
        images[name] = image
    return images


@pytest.fixture
async def stored(seeded: Seeded, shared_data: Path) -> dict[str, np.ndarray]:
    return await store_geotiffs(seeded, shared_data)


def rgba(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))


def resized(image: np.ndarray, size: int = 256) -> np.ndarray:
    """The stored image as a map tile of `size` px shows it (stretched to the tile's square)."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)).astype(int)


def path(tile: Tile) -> str:
    return f"/tiles/imagery/{tile.z}/{tile.x}/{tile.y}.png"


async def test_a_map_tile_is_the_scan_tile_image(
    server: str, stored: dict[str, np.ndarray]
) -> None:
    tile = TILES["positive1"][0]
    status, body, content_type = await fetch(server + path(tile))
    assert status == 200 and content_type == "image/png"
    drawn = rgba(body)
    assert drawn.shape == (256, 256, 4) and drawn[..., 3].min() == 255
    assert np.abs(drawn[..., :3].astype(int) - resized(stored["positive1"])).mean() < 4
    # Not any image: the neighbour's is far from it.
    assert np.abs(drawn[..., :3].astype(int) - resized(stored["negative1"])).mean() > 10


async def test_a_map_tile_over_four_scan_tiles_per_vintage_and_scan(
    server: str, stored: dict[str, np.ndarray]
) -> None:
    """Zoom 15 over the four: positive1 (2014) and positive2 (2015) fill its lower half (their
    parent's y is odd); negative1 and negative2 are the next map tile's upper half."""
    parent = Tile(37626 >> 1, 22003 >> 1, 15)
    _, body, _ = await fetch(server + path(parent))
    drawn = rgba(body)
    assert drawn[:128, :, 3].max() == 0  # no scan tile there: transparent
    assert drawn[128:, :, 3].min() == 255
    left = drawn[128:, :128, :3].astype(int)
    assert np.abs(left - resized(stored["positive1"], 128)).mean() < 4
    right = drawn[128:, 128:, :3].astype(int)
    assert np.abs(right - resized(stored["positive2"], 128)).mean() < 4

    _, body, _ = await fetch(server + path(parent), vintage="2014")
    only_2014 = rgba(body)
    assert only_2014[128:, :128, 3].min() == 255 and only_2014[128:, 128:, 3].max() == 0
    _, body, _ = await fetch(server + path(parent), vintage="2015-06-02")
    assert rgba(body)[128:, :128, 3].max() == 0 and rgba(body)[128:, 128:, 3].min() == 255
    _, body, _ = await fetch(server + path(parent), scan="another-scan")
    assert rgba(body)[..., 3].max() == 0
    _, body, _ = await fetch(server + path(parent), scan="scan-test", vintage="2015")
    assert rgba(body)[128:, 128:, 3].min() == 255


async def test_unchanged_imagery_is_answered_304(
    server: str, seeded: Seeded, stored: dict[str, np.ndarray]
) -> None:
    url = server + path(TILES["positive1"][0])
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as r:
            etag = r.headers["ETag"]
        async with session.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304 and await r.read() == b""
        # A newer image of the place (a later scan): a new tag, and the new pixels.
        newer = stored["negative2"]
        data = encode_tile(newer, TILES["positive1"][0].xy_bounds())
        key = await seeded.store.put(data, keys.TILE_IMAGES, "tif", "image/tiff")
        await seeded.db.execute(
            "UPDATE detections SET image_key = %s WHERE tile_id = %s",
            key,
            TILES["positive1"][0].quadkey,
        )
        async with session.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 200 and r.headers["ETag"] != etag
            drawn = rgba(await r.read())
    assert np.abs(drawn[..., :3].astype(int) - resized(newer)).mean() < 4


async def test_images_stored_before_the_geotiff_are_placed_by_their_tile(
    server: str, seeded: Seeded, shared_data: Path
) -> None:
    """The web fixtures store PNGs (as the tiler did before the GeoTIFF): drawn all the same."""
    _, body, _ = await fetch(server + path(TILES["negative1"][0]))
    image = read_image(shared_data / "tiles" / "negative1.png")
    assert np.abs(rgba(body)[..., :3].astype(int) - resized(image)).mean() < 4


async def test_no_imagery_is_transparent_and_bad_requests_say_why(
    server: str, stored: dict[str, np.ndarray]
) -> None:
    status, body, _ = await fetch(server + "/tiles/imagery/16/0/0.png")
    assert status == 200 and rgba(body)[..., 3].max() == 0
    for url, query, words in (
        ("/tiles/imagery/16/37626/22003.png", {"vintage": "2016'"}, "vintage"),
        ("/tiles/imagery/16/37626/22003.png", {"scan": "x" * 201}, "scan"),
        ("/tiles/imagery/30/0/0.png", {}, "zoom"),
        ("/tiles/imagery/2/9/0.png", {}, "from 0 to 3"),
    ):
        status, answer = await get(server + url, **query)
        assert status == 400 and words in str(answer), (url, answer)


async def test_too_many_scan_tiles_in_one_map_tile_is_refused(server: str, seeded: Seeded) -> None:
    """17 stored scan tiles under one zoom-13 map tile: more than one request draws."""
    corner = Tile(37626 >> 3 << 3, 22003 >> 3 << 3, 16)
    async with seeded.db.pool.connection() as conn:
        for i in range(imagery.MAX_SOURCES + 1):
            tile = Tile(corner.x + i % 8, corner.y + i // 8, 16)
            await conn.execute(
                b"INSERT INTO detections SELECT %s, imagery_date, model_version,"
                b" backbone_version, scan_id, z, %s, %s, provider, flagged, positives,"
                b" segment_count, min_positives, hectares, scores, demo, image_key, labels_key,"
                b" ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), NULL, detected_at"
                b" FROM detections WHERE tile_id = %s",
                [
                    f"copy-{i}",
                    tile.x,
                    tile.y,
                    json.dumps(tile.polygon()),
                    TILES["positive1"][0].quadkey,
                ],
            )
    status, answer = await get(server + f"/tiles/imagery/13/{corner.x >> 3}/{corner.y >> 3}.png")
    assert status == 400 and "zoom in" in answer["error"], answer
    # One zoom further in, a quarter of them: drawn.
    status, body, _ = await fetch(server + f"/tiles/imagery/14/{corner.x >> 2}/{corner.y >> 2}.png")
    assert status == 200 and rgba(body)[..., 3].max() == 255
