"""Tile maths: scan tiles, their provider tiles, bounds, ground resolution, pixel → lon/lat.

A scan tile is the unit the 2018 method was tuned for: about 1000×1000 px at ~0.4 m/px. It is one
zoom-16 web-mercator tile, fetched as its 4×4 zoom-18 children stitched into 1024×1024 px, and its
id is its quadkey. Pure: mercantile and shapely do the maths; nothing here does I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mercantile
import numpy as np
import shapely
from shapely import geometry as sg
from shapely.errors import GEOSException

from amberscan.errors import InvalidRegion

EARTH_RADIUS_M = 6_378_137.0
PROVIDER_TILE_PX = 256
MAX_LAT = 85.05112878
DEFAULT_SCAN_ZOOM = 16
DEFAULT_FETCH_ZOOM = 18
DEFAULT_MAX_TILES = 100_000


@dataclass(frozen=True, order=True)
class Tile:
    """A web-mercator tile; checks its ranges on construction."""

    x: int
    y: int
    z: int

    def __post_init__(self) -> None:
        if not 0 <= self.z <= 30:
            raise ValueError(f"tile zoom {self.z} outside 0..30")
        side = 1 << self.z
        if not (0 <= self.x < side and 0 <= self.y < side):
            raise ValueError(f"tile {self.z}/{self.x}/{self.y} outside the zoom-{self.z} grid")

    def __str__(self) -> str:
        return f"{self.z}/{self.x}/{self.y}"

    @property
    def quadkey(self) -> str:
        return str(mercantile.quadkey(self.x, self.y, self.z))

    @classmethod
    def from_quadkey(cls, quadkey: str) -> Tile:
        try:
            t = mercantile.quadkey_to_tile(quadkey)
        except (mercantile.QuadKeyError, ValueError) as error:
            raise ValueError(f"{quadkey!r} is not a quadkey ({error})") from None
        return cls(t.x, t.y, t.z)

    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in WGS84 degrees."""
        b = mercantile.bounds(self.x, self.y, self.z)
        return (b.west, b.south, b.east, b.north)

    def xy_bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in web-mercator metres (EPSG:3857)."""
        b = mercantile.xy_bounds(self.x, self.y, self.z)
        return (b.left, b.bottom, b.right, b.top)

    def center(self) -> tuple[float, float]:
        """(lon, lat) of the tile's centre, in mercator (the pixel grid's centre)."""
        return pixel_to_lonlat(self, 1, 1, 0.5, 0.5)

    def polygon(self) -> dict[str, Any]:
        """The tile's outline as a GeoJSON Polygon."""
        w, s, e, n = self.bounds()
        return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}

    def children_at(self, zoom: int) -> list[list[Tile]]:
        """The provider tiles covering this tile at `zoom`, as rows (north first) of columns."""
        if zoom < self.z:
            raise ValueError(f"fetch zoom {zoom} is coarser than the scan tile's zoom {self.z}")
        k = 1 << (zoom - self.z)
        return [[Tile(self.x * k + c, self.y * k + r, zoom) for c in range(k)] for r in range(k)]


def ground_resolution_m(lat: float, zoom: int, tile_px: int = PROVIDER_TILE_PX) -> float:
    """Metres per pixel at latitude `lat` for `tile_px`-pixel tiles at `zoom` (web mercator)."""
    return math.cos(math.radians(lat)) * 2 * math.pi * EARTH_RADIUS_M / (tile_px * (1 << zoom))


def pixel_area_m2(tile: Tile, width_px: int) -> float:
    """Ground area of one pixel of a `width_px`-wide image of `tile`, at the tile's centre."""
    lat = tile.center()[1]
    resolution = ground_resolution_m(lat, tile.z, width_px)
    return resolution * resolution


def pixel_to_lonlat(
    tile: Tile, width: int, height: int, col: float, row: float
) -> tuple[float, float]:
    """WGS84 (lon, lat) of pixel position (col, row) in a width×height image of `tile`."""
    left, bottom, right, top = mercantile.xy_bounds(tile.x, tile.y, tile.z)
    x = left + (right - left) * col / width
    y = top - (top - bottom) * row / height
    lon, lat = mercantile.lnglat(x, y)
    return (lon, lat)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """A "W,S,E,N" string as a validated bbox.

    Raises:
        InvalidRegion: naming what is wrong with it.
    """
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise InvalidRegion(f"bbox {text!r}: expected four numbers W,S,E,N") from None
    if len(values) != 4:
        raise InvalidRegion(f"bbox {text!r}: expected four numbers W,S,E,N, got {len(values)}")
    return check_bbox(values)


def check_bbox(bbox: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """`bbox` if it is a valid WGS84 (west, south, east, north); else InvalidRegion."""
    west, south, east, north = bbox
    if not all(math.isfinite(v) for v in bbox):
        raise InvalidRegion(f"bbox {bbox}: not finite")
    if not (-180 <= west < east <= 180):
        raise InvalidRegion(f"bbox {bbox}: need -180 <= west < east <= 180")
    if not (-MAX_LAT <= south < north <= MAX_LAT):
        raise InvalidRegion(f"bbox {bbox}: need -{MAX_LAT} <= south < north <= {MAX_LAT}")
    return bbox


def parse_geojson(text: str) -> sg.base.BaseGeometry:
    """A GeoJSON Polygon/MultiPolygon (or a Feature / FeatureCollection of them) as a geometry.

    Raises:
        InvalidRegion: if it is not valid JSON, not polygonal, empty or invalid.
    """
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InvalidRegion(f"GeoJSON region: not JSON ({error})") from None
    if not isinstance(document, dict):
        raise InvalidRegion("GeoJSON region: expected an object")
    kind = document.get("type")
    if kind == "FeatureCollection":
        geometries = [f.get("geometry") for f in document.get("features") or []]
    elif kind == "Feature":
        geometries = [document.get("geometry")]
    else:
        geometries = [document]
    shapes = []
    for g in geometries:
        if not isinstance(g, dict) or g.get("type") not in ("Polygon", "MultiPolygon"):
            raise InvalidRegion(
                f"GeoJSON region: only Polygon and MultiPolygon are scanned, got {g and g.get('type')!r}"
            )
        try:
            shape = sg.shape(g)
        except (GEOSException, ValueError, TypeError, IndexError) as error:
            raise InvalidRegion(f"GeoJSON region: malformed {g.get('type')} ({error})") from None
        if shape.is_empty or not shape.is_valid:
            raise InvalidRegion(f"GeoJSON region: {g.get('type')} is empty or self-intersecting")
        shapes.append(shape)
    if not shapes:
        raise InvalidRegion("GeoJSON region: no geometry")
    region = (
        shapes[0]
        if len(shapes) == 1
        else sg.MultiPolygon([p for s in shapes for p in getattr(s, "geoms", [s])])
    )
    check_bbox(region.bounds)
    return region


def tiles_for_region(
    region: tuple[float, float, float, float] | sg.base.BaseGeometry,
    zoom: int = DEFAULT_SCAN_ZOOM,
    max_tiles: int = DEFAULT_MAX_TILES,
) -> list[Tile]:
    """Scan tiles covering a bbox or polygon, sorted by quadkey (nearby tiles together).

    Raises:
        InvalidRegion: if the region is invalid or needs more than `max_tiles` tiles.
    """
    if isinstance(region, tuple):
        bbox = check_bbox(region)
        shape = None
    else:
        shape = region
        bbox = check_bbox(region.bounds)
    west, south, east, north = bbox
    # Estimate before enumerating, so an oversized region fails fast instead of exhausting memory.
    ul = mercantile.tile(west, north, zoom)
    lr = mercantile.tile(east, south, zoom)
    estimate = (lr.x - ul.x + 1) * (lr.y - ul.y + 1)
    if estimate > max_tiles:
        raise InvalidRegion(
            f"region {bbox} needs about {estimate} zoom-{zoom} tiles, more than the limit {max_tiles}"
        )
    tiles = [Tile(t.x, t.y, t.z) for t in mercantile.tiles(west, south, east, north, zoom)]
    if shape is not None and tiles:
        # One prepared test of every tile's box at once (#26, defect 7): a region of 10⁵
        # vertices tested tile by tile unprepared took seconds per thousand tiles.
        bounds = np.array([t.bounds() for t in tiles], dtype=np.float64)
        boxes = shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])
        shapely.prepare(shape)
        hits = shapely.intersects(shape, boxes)
        tiles = [t for t, hit in zip(tiles, hits, strict=True) if hit]
    return sorted(set(tiles), key=lambda t: t.quadkey)


def iter_rows(tile: Tile, fetch_zoom: int) -> Iterator[tuple[int, int, Tile]]:
    """(row, col, provider tile) for each child of `tile` at `fetch_zoom`."""
    for r, row in enumerate(tile.children_at(fetch_zoom)):
        for c, child in enumerate(row):
            yield r, c, child
