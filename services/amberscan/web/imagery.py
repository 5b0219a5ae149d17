"""The scanned imagery as map tiles (#27): which stored scan tiles a map tile needs, and the map
tile drawn from them with rio-tiler. Pure: rows and bytes in, a choice and PNG bytes out.

The tiler stores each scan tile's image once, as a GeoTIFF georeferenced in web mercator
(`vision.imageio.encode_tile`, content-addressed under `tiles/`); detections name it
(`image_key`). A map tile z/x/y is a mosaic of the scan tiles that overlap it, one image each
(the newest imagery date of the vintage asked for, so several models' detections of one image
are one source), newest first. rio-tiler reads each at the map tile's bounds and size
(`Reader.tile`, the same read the raster providers make) and its mosaic keeps the first valid
pixel; outside every scan tile the PNG is transparent. Images stored before the GeoTIFF (PNG,
not georeferenced) are placed by their scan tile's bounds.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image
from rasterio.io import MemoryFile
from rio_tiler.errors import EmptyMosaicError, NoOverviewWarning
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from rio_tiler.mosaic import mosaic_reader

from amberscan.geo.tiles import Tile
from amberscan.web.core import BadRequest

# A map tile draws at most this many scan tiles: with zoom-16 scan tiles, map zoom 14 and up
# (4 × 4 of them). Each read is one stored GeoTIFF (~1.3 MB, 1024 px): this bounds a request's
# memory and CPU.
MAX_SOURCES = 16
TILE_PX = 256
# The zoom below which the map does not ask (DEFAULT_SCAN_ZOOM 16 minus 2: 16 scan tiles).
MIN_ZOOM = 14
_VINTAGE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_TIFF = (b"II*\x00", b"MM\x00*")
# A scan tile has no overviews, and needs none: it is read whole (1024 px at most).
warnings.filterwarnings("ignore", category=NoOverviewWarning)


class TooManySources(BadRequest):
    """A map tile over more scan tiles than MAX_SOURCES: zoom in."""


@dataclass(frozen=True)
class Source:
    """One stored scan tile image: its blob key, its scan tile, its imagery date."""

    key: str
    tile: Tile
    imagery_date: str


def vintage_prefix(vintage: str) -> str | None:
    """The imagery dates a `vintage` parameter selects, as an ISO date prefix ("" for any);
    None for "unknown" (undated imagery: the date is "").

    Raises:
        BadRequest: neither "", "unknown" nor a year, year-month or date.
    """
    if vintage == "unknown":
        return None
    if vintage and not _VINTAGE.match(vintage):
        raise BadRequest(
            f"vintage {vintage[:40]!r}: give a year (2016), a month (2016-05), a date "
            "(2016-05-04) or 'unknown'"
        )
    return vintage


def overlaps(scan: Tile, map_tile: Tile) -> bool:
    """Whether a scan tile and a map tile share area (touching edges only is not sharing)."""
    if scan.z >= map_tile.z:
        shift = scan.z - map_tile.z
        return (scan.x >> shift, scan.y >> shift) == (map_tile.x, map_tile.y)
    shift = map_tile.z - scan.z
    return (map_tile.x >> shift, map_tile.y >> shift) == (scan.x, scan.y)


def sources_for(map_tile: Tile, candidates: Iterable[Source]) -> list[Source]:
    """The stored images map tile `map_tile` is drawn from, newest imagery first.

    Args:
        map_tile: the map tile asked for.
        candidates: images near it (the database's bounding-box match, which also returns the
            scan tiles that only touch its edges), in any order.

    Returns:
        One image per overlapping scan tile: its newest imagery date (for equal dates, the
        first given); newest first, then by tile, so the order is stable.

    Raises:
        TooManySources: more than MAX_SOURCES scan tiles overlap it.
    """
    newest: dict[Tile, Source] = {}
    for source in candidates:
        if not overlaps(source.tile, map_tile):
            continue
        kept = newest.get(source.tile)
        if kept is None or source.imagery_date > kept.imagery_date:
            newest[source.tile] = source
    if len(newest) > MAX_SOURCES:
        raise TooManySources(
            f"map tile {map_tile} covers {len(newest)} scan tiles, more than {MAX_SOURCES} "
            f"drawn at once: zoom in"
        )
    by_date = sorted(newest.values(), key=lambda s: (s.tile.z, s.tile.x, s.tile.y))
    return sorted(by_date, key=lambda s: s.imagery_date, reverse=True)


def etag(map_tile: Tile, sources: Sequence[Source]) -> str:
    """The entity tag of a map tile drawn from `sources` (stored images never change under a
    key: the same keys in the same order draw the same PNG)."""
    text = f"{map_tile}|" + "|".join(s.key for s in sources)
    return '"' + hashlib.blake2b(text.encode(), digest_size=12).hexdigest() + '"'


def georeferenced(source: Source, data: bytes) -> bytes:
    """The stored image as a georeferenced GeoTIFF: as stored, or (an image from before the
    GeoTIFF) encoded with its scan tile's bounds."""
    if data[:4] in _TIFF:
        return data
    from amberscan.vision.imageio import decode_image, encode_tile

    return encode_tile(decode_image(data, source.key), source.tile.xy_bounds())


def render(map_tile: Tile, images: Sequence[tuple[Source, bytes]], size: int = TILE_PX) -> bytes:
    """Map tile `map_tile` as an RGBA PNG of `size` px drawn from `images` (newest first: the
    first valid pixel wins); transparent where none has imagery.

    Raises:
        amberscan.errors.InvalidImage: a stored image that is no image.
    """

    def read(item: tuple[Source, bytes], x: int, y: int, z: int) -> ImageData:
        source, data = item
        with (
            MemoryFile(georeferenced(source, data)) as memory,
            memory.open() as dataset,
            Reader(None, dataset=dataset) as reader,
        ):
            image: ImageData = reader.tile(
                x, y, z, tilesize=size, indexes=(1, 2, 3), resampling_method="bilinear"
            )
            return image

    try:
        image, _ = mosaic_reader(list(images), read, map_tile.x, map_tile.y, map_tile.z, threads=1)
    except EmptyMosaicError:
        return blank(size)
    return bytes(image.render(img_format="PNG"))


@functools.cache
def blank(size: int = TILE_PX) -> bytes:
    """A transparent PNG: a map tile with no scanned imagery."""
    buffer = io.BytesIO()
    Image.new("RGBA", (size, size), (0, 0, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()
