"""The demo area: eight real aerial tiles placed at illustrative coordinates, and a tile server.

The four whole tiles of the texty-amber data set (Bing Maps aerial imagery of 2014-2016 from
north-western Ukraine, labelled for texty.org.ua's 2018 amber investigation) carry no
geo-reference. Here each is resized to 1024×1024 and, with four flipped/rotated copies, laid out
as a 4×2 block of zoom-16 scan tiles near 51.30 N, 26.87 E. The place is illustrative: it is not
where the images were taken. `serve` runs a z/x/y server of that block (zoom-18 tiles cut from
the images, coarser zooms downsampled for a map base layer); the "demo" provider reads it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import mercantile
import numpy as np
from aiohttp import web
from numpy.typing import NDArray
from PIL import Image

from amberscan.geo.tiles import PROVIDER_TILE_PX, Tile
from amberscan.imagery.providers import DATE_HEADER
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import read_image

DEMO_NOTICE = (
    "Demo area: real aerial images (Bing Maps imagery, 2014-2016) from the texty.org.ua amber "
    "data set, placed at illustrative coordinates in north-western Ukraine; they were not taken "
    "there. For testing and demonstration only; imagery rights stay with the provider."
)
DEMO_ZOOM = 16
DEMO_FETCH_ZOOM = 18
DEMO_LON, DEMO_LAT = 26.87, 51.30  # north-west corner of the block (illustrative)
DEMO_COLUMNS, DEMO_ROWS = 4, 2
# The real capture dates (2014-2016) are not known per image: one illustrative date for all.
DEMO_IMAGERY_DATE = "2015-06-01"
SCAN_PX = PROVIDER_TILE_PX << (DEMO_FETCH_ZOOM - DEMO_ZOOM)  # 1024
SOURCES = ("positive1", "negative1", "positive2", "negative2")


@dataclass(frozen=True)
class DemoTile:
    """One demo scan tile and where its image comes from."""

    tile: Tile
    source: str  # e.g. "positive1" or "positive1 flipped left-right"


def _origin() -> Tile:
    t = mercantile.tile(DEMO_LON, DEMO_LAT, DEMO_ZOOM)
    return Tile(t.x, t.y, t.z)


def demo_layout() -> list[DemoTile]:
    """The eight demo scan tiles: the real images in the north row, transformed copies below."""
    origin = _origin()
    transforms = ("flipped left-right", "rotated 90", "flipped top-bottom", "rotated 270")
    names = [*SOURCES, *(f"{s} {t}" for s, t in zip(SOURCES, transforms, strict=True))]
    return [
        DemoTile(Tile(origin.x + i % DEMO_COLUMNS, origin.y + i // DEMO_COLUMNS, DEMO_ZOOM), name)
        for i, name in enumerate(names)
    ]


def demo_tiles() -> list[Tile]:
    """The demo scan tiles, sorted by quadkey as `tiles_for_region` lists them."""
    return sorted((d.tile for d in demo_layout()), key=lambda t: t.quadkey)


def demo_bbox() -> tuple[float, float, float, float]:
    """(west, south, east, north) slightly inside the union of the demo tiles."""
    tiles = [d.tile for d in demo_layout()]
    west = min(t.bounds()[0] for t in tiles)
    south = min(t.bounds()[1] for t in tiles)
    east = max(t.bounds()[2] for t in tiles)
    north = max(t.bounds()[3] for t in tiles)
    dx, dy = (east - west) * 0.01, (north - south) * 0.01
    return (west + dx, south + dy, east - dx, north - dy)


def demo_scan_request(scan_id: str | None = None) -> pb.ScanRequest:
    """A scan request covering exactly the eight demo tiles, from the "demo" provider."""
    w, s, e, n = demo_bbox()
    return pb.ScanRequest(
        scan_id=scan_id or uuid.uuid4().hex,
        bbox=pb.BoundingBox(west=w, south=s, east=e, north=n),
        zoom=DEMO_ZOOM,
        fetch_zoom=DEMO_FETCH_ZOOM,
        provider="demo",
        demo=True,
    )


def _transform(image: NDArray[np.uint8], name: str) -> NDArray[np.uint8]:
    if name.endswith("flipped left-right"):
        return image[:, ::-1]
    if name.endswith("flipped top-bottom"):
        return image[::-1]
    if name.endswith("rotated 90"):
        return np.rot90(image, 1)
    if name.endswith("rotated 270"):
        return np.rot90(image, 3)
    return image


@functools.lru_cache(maxsize=4)
def demo_images(data_dir: Path) -> dict[Tile, NDArray[np.uint8]]:
    """The 1024×1024 RGB image of each demo scan tile, read from `data_dir` (the texty tiles).

    Raises:
        InvalidImage: a source image is missing or unreadable (names the file).
    """
    resized: dict[str, NDArray[np.uint8]] = {}
    for name in SOURCES:
        image = read_image(Path(data_dir) / f"{name}.png")
        if image.shape[:2] != (SCAN_PX, SCAN_PX):
            pil = Image.fromarray(image).resize((SCAN_PX, SCAN_PX), Image.Resampling.LANCZOS)
            image = np.asarray(pil)
        resized[name] = image
    return {
        d.tile: np.ascontiguousarray(_transform(resized[d.source.split(" ")[0]], d.source))
        for d in demo_layout()
    }


class DemoTileServer:
    """Renders z/x/y PNG tiles of the demo block from one mosaic at zoom-18 resolution."""

    def __init__(self, data_dir: Path) -> None:
        images = demo_images(Path(data_dir))
        origin = _origin()
        self.mosaic = np.zeros((DEMO_ROWS * SCAN_PX, DEMO_COLUMNS * SCAN_PX, 3), dtype=np.uint8)
        for tile, image in images.items():
            r, c = (tile.y - origin.y) * SCAN_PX, (tile.x - origin.x) * SCAN_PX
            self.mosaic[r : r + SCAN_PX, c : c + SCAN_PX] = image
        # The mosaic's north-west corner in zoom-18 pixel coordinates.
        step = SCAN_PX
        self.origin_px = (origin.x * step, origin.y * step)
        self._png = functools.lru_cache(maxsize=2048)(self._render)

    def png(self, z: int, x: int, y: int) -> bytes | None:
        """The PNG of tile z/x/y, or None outside the demo block (or finer than zoom 18)."""
        if not 0 <= z <= DEMO_FETCH_ZOOM or not (0 <= x < 1 << z and 0 <= y < 1 << z):
            return None
        result: bytes | None = self._png(z, x, y)
        return result

    def _render(self, z: int, x: int, y: int) -> bytes | None:
        scale = 1 << (DEMO_FETCH_ZOOM - z)  # zoom-18 pixels per pixel of this tile
        size = PROVIDER_TILE_PX * scale
        left = x * size - self.origin_px[0]
        top = y * size - self.origin_px[1]
        height, width = self.mosaic.shape[:2]
        c0, c1 = max(left, 0), min(left + size, width)
        r0, r1 = max(top, 0), min(top + size, height)
        if c0 >= c1 or r0 >= r1:
            return None
        crop = self.mosaic[r0:r1, c0:c1]
        buffer = io.BytesIO()
        if scale == 1 and crop.shape[:2] == (PROVIDER_TILE_PX, PROVIDER_TILE_PX):
            Image.fromarray(np.ascontiguousarray(crop)).save(buffer, format="PNG")
            return buffer.getvalue()
        # A coarser tile: shrink the covered part and leave the rest transparent.
        canvas = Image.new("RGBA", (PROVIDER_TILE_PX, PROVIDER_TILE_PX), (0, 0, 0, 0))
        part = Image.fromarray(np.ascontiguousarray(crop)).convert("RGBA")
        w = max(1, (c1 - c0) // scale)
        h = max(1, (r1 - r0) // scale)
        canvas.paste(
            part.resize((w, h), Image.Resampling.BOX), ((c0 - left) // scale, (r0 - top) // scale)
        )
        canvas.save(buffer, format="PNG")
        return buffer.getvalue()


class TileSource(Protocol):
    """What the tile server serves: a PNG per z/x/y, or None (a 404)."""

    def png(self, z: int, x: int, y: int) -> bytes | None: ...


def make_app(
    data_dir: Path,
    imagery_date: str = DEMO_IMAGERY_DATE,
    server: TileSource | None = None,
) -> web.Application:
    """The demo tile server: GET /tiles/{z}/{x}/{y}.png, with ETags and the imagery date header.

    `server` serves other tiles the same way (the larger demo mosaic, `tiler.mosaic`).
    """
    server = server or DemoTileServer(data_dir)

    async def tile(request: web.Request) -> web.Response:
        try:
            z, x, y = (int(request.match_info[k]) for k in ("z", "x", "y"))
        except ValueError:
            raise web.HTTPNotFound() from None
        png = server.png(z, x, y)
        if png is None:
            raise web.HTTPNotFound(text=f"tile {z}/{x}/{y} is outside the demo area")
        etag = '"' + hashlib.sha256(png).hexdigest()[:32] + '"'
        headers = {
            "ETag": etag,
            DATE_HEADER: imagery_date,
            "Cache-Control": "public, max-age=3600",
            "Access-Control-Allow-Origin": "*",
        }
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=png, content_type="image/png", headers=headers)

    async def notice(_request: web.Request) -> web.Response:
        return web.json_response({"notice": DEMO_NOTICE, "bbox": demo_bbox()})

    app = web.Application()
    app.router.add_get(r"/tiles/{z:\d+}/{x:\d+}/{y:\d+}.png", tile)
    app.router.add_get("/", notice)
    return app


def serve(host: str, port: int, data_dir: Path) -> None:
    """Run the demo tile server until interrupted."""
    print(DEMO_NOTICE)
    print(f"demo tiles at http://{host}:{port}/tiles/{{z}}/{{x}}/{{y}}.png")
    web.run_app(make_app(data_dir), host=host, port=port, print=None)
