"""A larger demo area, for fault and load runs: a mosaic cut from the real shared tiles.

The four whole tiles of the texty-amber data set (see `demo`), each in its eight flips and
rotations, are laid out on a grid of zoom-16 scan tiles in a fixed pseudo-random order. Scan
tiles are then cut from that canvas shifted by half a tile, so each one holds crops of four
neighbouring images and no two are alike; `shift=0` keeps whole images instead (32 distinct
tiles, repeated). The place is illustrative, south-west of the 8-tile demo area: it is not where
the images were taken, and every scan of it is labelled demo.

Nothing is held as one big canvas: a scan tile's image is composed when asked for, and the tile
server cuts the zoom-18 provider tiles the tiler fetches from it.

    python -m amberscan.tiler.mosaic --tiles 200 --port 18081   # serve it (the "demo" provider)
"""

from __future__ import annotations

import argparse
import functools
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import mercantile
import numpy as np
from aiohttp import web
from numpy.typing import NDArray

from amberscan.geo.tiles import PROVIDER_TILE_PX, Tile
from amberscan.tiler import demo
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import encode_png

MOSAIC_NOTICE = (
    "Demo mosaic: crops of flipped and rotated copies of the real aerial images (Bing Maps "
    "imagery, 2014-2016) of the texty.org.ua amber data set, placed at illustrative coordinates "
    "in north-western Ukraine; they were not taken there. For testing only."
)
MOSAIC_LON, MOSAIC_LAT = 26.50, 51.20  # north-west corner (illustrative)
ZOOM, FETCH_ZOOM = demo.DEMO_ZOOM, demo.DEMO_FETCH_ZOOM
SCAN_PX = demo.SCAN_PX
_STEP = FETCH_ZOOM - ZOOM
# The eight symmetries of a square, as functions of an (H, W, 3) array.
DIHEDRAL = (
    ("", lambda a: a),
    ("rotated 90", lambda a: np.rot90(a, 1)),
    ("rotated 180", lambda a: np.rot90(a, 2)),
    ("rotated 270", lambda a: np.rot90(a, 3)),
    ("flipped left-right", lambda a: a[:, ::-1]),
    ("flipped top-bottom", lambda a: a[::-1]),
    ("transposed", lambda a: np.transpose(a, (1, 0, 2))),
    ("anti-transposed", lambda a: np.rot90(a, 2).transpose(1, 0, 2)),
)


def grid_for(tiles: int) -> tuple[int, int]:
    """(columns, rows) of the smallest near 2:1 grid holding at least `tiles` scan tiles."""
    if tiles < 1:
        raise ValueError(f"a mosaic needs at least one tile, not {tiles}")
    rows = max(1, math.isqrt(max(tiles // 2, 1)))
    columns = math.ceil(tiles / rows)
    return columns, rows


@dataclass(frozen=True)
class Mosaic:
    """A `columns` × `rows` block of demo scan tiles from the images in `data_dir`."""

    columns: int
    rows: int
    data_dir: Path
    seed: int = 0
    shift: float = 0.5  # of a tile: 0.5 cuts crops of four images, 0 keeps whole images

    @classmethod
    def of(cls, tiles: int, data_dir: Path, **kwargs: object) -> Mosaic:
        """The mosaic of at least `tiles` scan tiles (see `grid_for`)."""
        columns, rows = grid_for(tiles)
        return cls(columns, rows, data_dir, **kwargs)  # type: ignore[arg-type]

    @property
    def origin(self) -> Tile:
        t = mercantile.tile(MOSAIC_LON, MOSAIC_LAT, ZOOM)
        return Tile(t.x, t.y, t.z)

    def tiles(self) -> list[Tile]:
        """The scan tiles, sorted by quadkey as `tiles_for_region` lists them."""
        o = self.origin
        grid = [Tile(o.x + c, o.y + r, ZOOM) for r in range(self.rows) for c in range(self.columns)]
        return sorted(grid, key=lambda t: t.quadkey)

    def bbox(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) just inside the block, so a scan covers exactly it."""
        o = self.origin
        west, _, _, north = o.bounds()
        _, south, east, _ = Tile(o.x + self.columns - 1, o.y + self.rows - 1, ZOOM).bounds()
        dx, dy = (east - west) / self.columns * 0.01, (north - south) / self.rows * 0.01
        return (west + dx, south + dy, east - dx, north - dy)

    def scan_request(self, scan_id: str | None = None, *, rescan: bool = False) -> pb.ScanRequest:
        """A scan of exactly the mosaic's tiles from the "demo" provider, labelled demo."""
        w, s, e, n = self.bbox()
        return pb.ScanRequest(
            scan_id=scan_id or uuid.uuid4().hex,
            bbox=pb.BoundingBox(west=w, south=s, east=e, north=n),
            zoom=ZOOM,
            fetch_zoom=FETCH_ZOOM,
            provider="demo",
            demo=True,
            rescan=rescan,
        )

    def source(self, row: int, column: int) -> tuple[str, int]:
        """(image name, symmetry index) of canvas cell (row, column); the canvas has one more
        row and column than the grid, for the shifted cut."""
        rng = np.random.default_rng([self.seed, row, column])
        name = demo.SOURCES[int(rng.integers(len(demo.SOURCES)))]
        return name, int(rng.integers(len(DIHEDRAL)))

    def describe(self, tile: Tile) -> str:
        """Where a scan tile's pixels come from, e.g. "crops of positive1 rotated 90, …"."""
        r, c = tile.y - self.origin.y, tile.x - self.origin.x
        cells = [(r, c)] if not self.shift else [(r + i, c + j) for i in (0, 1) for j in (0, 1)]
        names = []
        for cell in cells:
            name, symmetry = self.source(*cell)
            names.append(f"{name} {DIHEDRAL[symmetry][0]}".strip())
        return names[0] if len(names) == 1 else f"crops of {', '.join(names)}"

    def image(self, tile: Tile) -> NDArray[np.uint8]:
        """The 1024×1024 RGB image of one scan tile of the mosaic.

        Raises:
            ValueError: `tile` is not one of the mosaic's.
        """
        r, c = tile.y - self.origin.y, tile.x - self.origin.x
        if tile.z != ZOOM or not (0 <= r < self.rows and 0 <= c < self.columns):
            raise ValueError(f"tile {tile} is not in the {self.columns}x{self.rows} mosaic")
        return _compose(self, r, c)

    def png(self, z: int, x: int, y: int) -> bytes | None:
        """The PNG of zoom-18 provider tile z/x/y, or None outside the mosaic (or another zoom)."""
        r, c = (y >> _STEP) - self.origin.y, (x >> _STEP) - self.origin.x
        if z != FETCH_ZOOM or not (0 <= r < self.rows and 0 <= c < self.columns):
            return None
        k = 1 << _STEP
        return _provider_png(self, r, c, y % k, x % k)


# Kept encoded, as a tile server's cache would keep them: a warm scan then costs the provider
# its HTTP answers only, not a PNG encoding per provider tile on the scanning machine's cores.
@functools.lru_cache(maxsize=4096)
def _provider_png(mosaic: Mosaic, r: int, c: int, row: int, column: int) -> bytes:
    """Provider tile (`row`, `column`) of scan tile (`r`, `c`) of the mosaic, as PNG."""
    image = _compose(mosaic, r, c)
    r0, c0 = row * PROVIDER_TILE_PX, column * PROVIDER_TILE_PX
    block = image[r0 : r0 + PROVIDER_TILE_PX, c0 : c0 + PROVIDER_TILE_PX]
    return encode_png(np.ascontiguousarray(block))


@functools.lru_cache(maxsize=32)
def _variant(data_dir: Path, name: str, symmetry: int) -> NDArray[np.uint8]:
    """One of the real images (`demo.SOURCES`, at 1024 px) in one of its eight symmetries."""
    where = {d.source: d.tile for d in demo.demo_layout()}
    image = demo.demo_images(data_dir)[where[name]]
    return np.ascontiguousarray(DIHEDRAL[symmetry][1](image))


@functools.lru_cache(maxsize=48)
def _compose(mosaic: Mosaic, r: int, c: int) -> NDArray[np.uint8]:
    off = int(round(mosaic.shift * SCAN_PX))
    if off == 0:
        return _variant(mosaic.data_dir, *mosaic.source(r, c))
    out = np.empty((SCAN_PX, SCAN_PX, 3), dtype=np.uint8)
    for i in (0, 1):
        for j in (0, 1):
            cell = _variant(mosaic.data_dir, *mosaic.source(r + i, c + j))
            rows = slice(off, SCAN_PX) if i == 0 else slice(0, off)
            cols = slice(off, SCAN_PX) if j == 0 else slice(0, off)
            out[
                (SCAN_PX - off) * i : (SCAN_PX - off) * i + (rows.stop - rows.start),
                (SCAN_PX - off) * j : (SCAN_PX - off) * j + (cols.stop - cols.start),
            ] = cell[rows, cols]
    return out


def make_app(mosaic: Mosaic) -> web.Application:
    """The mosaic's z/x/y tile server (as the demo tile server answers, zoom 18 only)."""
    return demo.make_app(mosaic.data_dir, server=mosaic)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="serve a demo mosaic of the shared tiles")
    parser.add_argument("--tiles", type=int, default=200, help="scan tiles at least")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18081)
    parser.add_argument(
        "--data", type=Path, help="the shared tiles/ (default: found as the demo does)"
    )
    parser.add_argument("--whole", action="store_true", help="whole images, no crops")
    args = parser.parse_args(argv)
    from amberscan.common.data import shared_data_dir
    from amberscan.common.settings import load_settings

    data = args.data or shared_data_dir(load_settings().data, "tiles")
    mosaic = Mosaic.of(args.tiles, data, shift=0.0 if args.whole else 0.5)
    print(MOSAIC_NOTICE)
    print(f"{mosaic.columns}x{mosaic.rows} scan tiles at http://{args.host}:{args.port}/tiles/")
    web.run_app(make_app(mosaic), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
