"""Web fixtures: detections of the four shared tiles stored like the pipeline stores them, and
the web app serving them on a free port of the real local stack."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from amberscan.aggregator.core import mask_polygon
from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.geo.tiles import Tile, pixel_to_lonlat
from amberscan.sink.core import UPSERT_DETECTION, detection_row
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import read_image
from amberscan.vision.labels import encode_labels
from amberscan.vision.segment import Segmentation, segment
from amberscan.web.app import make_app
from tests.streams import free_port, served

TOKEN = "test-token-123"
MODEL = "clf-test-1"
# Four neighbouring zoom-16 tiles near Klesiv (the demo area's part of Ukraine), one per image.
TILES = {
    "positive1": (Tile(37626, 22003, 16), "2014-10-11", True),
    "positive2": (Tile(37627, 22003, 16), "2015-06-02", True),
    "negative1": (Tile(37626, 22004, 16), "2014-10-11", False),
    "negative2": (Tile(37627, 22004, 16), "2016-04-20", False),
}
HOSTILE = "<img src=x id=xss onerror=document.title='xss'>"
# Wide enough for every tile above.
BBOX = "26.5,50.7,26.8,50.9"


@dataclass(frozen=True)
class Seeded:
    settings: Settings
    db: Database
    store: BlobStore
    tiles: dict[str, pb.Detection]


def _scores(n: int, mining: bool, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 0.3, n)
    if mining:
        scores[rng.choice(n, size=min(n, 5), replace=False)] = rng.uniform(0.7, 0.99, min(n, 5))
    return [float(s) for s in scores]


def damage_geojson(tile: Tile, segmentation: Segmentation, positive: list[int]) -> str:
    """The damaged-area MultiPolygon of a tile's positive superpixels, as the aggregator makes
    it (exact pixel outlines, in degrees)."""
    height, width = segmentation.labels.shape
    polygons = []
    for index in positive:
        shape = mask_polygon(segmentation.labels == index, 0, 0)
        for part in getattr(shape, "geoms", [shape]):
            ring = [
                list(pixel_to_lonlat(tile, width, height, x, y)) for x, y in part.exterior.coords
            ]
            polygons.append([ring])
    return json.dumps({"type": "MultiPolygon", "coordinates": polygons})


async def seed(
    db: Database, store: BlobStore, shared_data: Path, demo: bool
) -> dict[str, pb.Detection]:
    """Store the four shared tiles and their labels, and upsert one detection each (sink SQL)."""
    await store.ensure_bucket()
    out: dict[str, pb.Detection] = {}
    for i, (name, (tile, date, mining)) in enumerate(TILES.items()):
        path = shared_data / "tiles" / f"{name}.png"
        image = read_image(path)
        segmentation = await asyncio.to_thread(segment, image, mode="fast")
        image_key = await store.put(path.read_bytes(), "tiles", "png", "image/png")
        labels_key = await store.put(
            encode_labels(segmentation.labels), "labels", "png", "image/png"
        )
        scores = _scores(len(segmentation.superpixels), mining, i)
        positive = [k for k, s in enumerate(scores) if s >= 0.5]
        positives = len(positive)
        detection = pb.Detection(
            tile_id=tile.quadkey,
            scan_id="scan-test",
            tile=pb.TileCoord(x=tile.x, y=tile.y, z=tile.z),
            # Markup in a stored field must reach the page as text (checked in the browser).
            provider=HOSTILE if name == "positive1" else "demo",
            imagery_date=date,
            flagged=positives > 2,
            positives=positives,
            segment_count=len(scores),
            min_positives=2,
            hectares=1.5 * positives,
            tile_geojson=json.dumps(tile.polygon()),
            positives_geojson=damage_geojson(tile, segmentation, positive) if positives > 2 else "",
            scores=scores,
            models=pb.ModelVersions(classifier=MODEL, backbone="efficientnet_lite0@1"),
            demo=demo,
            image_key=image_key,
            labels_key=labels_key,
        )
        async with db.pool.connection() as conn:
            await conn.execute(UPSERT_DETECTION.encode(), detection_row(detection))
        out[name] = detection
    return out


@pytest.fixture
async def seeded(stack_settings: Settings, database: Database, shared_data: Path) -> Seeded:
    store = BlobStore(stack_settings.s3)
    tiles = await seed(database, store, shared_data, demo=True)
    return Seeded(stack_settings, database, store, tiles)


@pytest.fixture
async def server(seeded: Seeded) -> AsyncIterator[str]:
    """The web app on a free port, with writes enabled by TOKEN; yields its base URL."""
    port = free_port()
    settings = replace(seeded.settings, web={"port": port, "token": TOKEN})
    async with served(make_app(settings), port) as base:
        yield base
