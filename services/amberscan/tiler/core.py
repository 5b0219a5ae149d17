"""Tiler core: which provider tiles make a scan tile, stitching them, and the Tile message.

Pure: Tile values, numpy arrays and protobuf values in and out; no I/O. A scan tile is one
zoom-16 web-mercator tile (its id is its quadkey) fetched as its 4×4 zoom-18 children of 256 px,
stitched north-first into one 1024×1024 RGB image.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from amberscan.common.errors import InvalidImage, InvalidRegion, PoisonMessage
from amberscan.geo.tiles import (
    DEFAULT_FETCH_ZOOM,
    DEFAULT_MAX_TILES,
    DEFAULT_SCAN_ZOOM,
    PROVIDER_TILE_PX,
    Tile,
    iter_rows,
    parse_geojson,
    tiles_for_region,
)
from amberscan.v1 import messages_pb2 as pb

# A scan tile is at most 8×8 provider tiles (2048 px): larger images would not fit the method
# (tuned for ~1000 px at ~0.4 m/px) and would only cost memory.
MAX_ZOOM_STEP = 3


@dataclass(frozen=True)
class Child:
    """One provider tile of a scan tile and its place (row north first, column west first)."""

    row: int
    col: int
    tile: Tile


@dataclass(frozen=True)
class ScanPlan:
    """What a scan request asks the tiler for: zooms, provider and its scan tiles."""

    scan_id: str
    zoom: int
    fetch_zoom: int
    provider: str
    tiles: tuple[Tile, ...]
    tiles_expected: int  # of the whole scan (a one-tile request is part of a larger one)
    single: bool = False  # a one-tile request, split from a region request


def plan_children(scan_tile: Tile, fetch_zoom: int) -> list[Child]:
    """The provider tiles of `scan_tile` at `fetch_zoom`, row by row from the north-west corner.

    Raises:
        ValueError: if `fetch_zoom` is coarser than the scan tile's zoom.
    """
    return [Child(r, c, t) for r, c, t in iter_rows(scan_tile, fetch_zoom)]


def stitch(
    children: Sequence[Child],
    images: Sequence[NDArray[np.uint8]],
    tile_px: int = PROVIDER_TILE_PX,
) -> NDArray[np.uint8]:
    """Stitch provider tile images into one scan tile image.

    Args:
        children: The plan, from `plan_children` (a complete k×k grid).
        images: One (tile_px, tile_px, 3) uint8 array per child, in the same order.
        tile_px: Side of a provider tile in pixels.

    Returns:
        A (k·tile_px, k·tile_px, 3) uint8 array.

    Raises:
        InvalidImage: a child image has the wrong shape or dtype (the message names its z/x/y).
        ValueError: the plan is not a complete square grid, or images do not match it.
    """
    if len(children) != len(images):
        raise ValueError(f"stitch: {len(children)} children but {len(images)} images")
    k = int(round(len(children) ** 0.5))
    places = {(c.row, c.col) for c in children}
    if k * k != len(children) or places != {(r, c) for r in range(k) for c in range(k)}:
        raise ValueError(f"stitch: {len(children)} children do not form a complete square grid")
    out = np.empty((k * tile_px, k * tile_px, 3), dtype=np.uint8)
    for child, image in zip(children, images, strict=True):
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.shape != (tile_px, tile_px, 3):
            raise InvalidImage(
                f"tile {child.tile}: expected a {tile_px}x{tile_px} RGB uint8 image, "
                f"got {array.dtype} {array.shape}"
            )
        r0, c0 = child.row * tile_px, child.col * tile_px
        out[r0 : r0 + tile_px, c0 : c0 + tile_px] = array
    return out


def split(image: NDArray[np.uint8], k: int) -> list[NDArray[np.uint8]]:
    """The k×k provider-tile blocks of a square image, row by row (the inverse of `stitch`)."""
    side = image.shape[0] // k
    return [
        image[r * side : (r + 1) * side, c * side : (c + 1) * side]
        for r in range(k)
        for c in range(k)
    ]


def plan_scan(
    request: pb.ScanRequest, default_provider: str, max_tiles: int = DEFAULT_MAX_TILES
) -> ScanPlan:
    """Validate a scan request and list its scan tiles (sorted by quadkey).

    Raises:
        PoisonMessage: the request has no scan id, impossible zooms or an invalid region; the
            message names the scan and the problem.
    """
    scan_id = request.scan_id
    if not scan_id:
        raise PoisonMessage("scan request without scan_id")
    zoom = request.zoom or DEFAULT_SCAN_ZOOM
    fetch_zoom = request.fetch_zoom or DEFAULT_FETCH_ZOOM
    if not 0 <= zoom <= fetch_zoom <= zoom + MAX_ZOOM_STEP or fetch_zoom > 23:
        raise PoisonMessage(
            f"scan {scan_id}: fetch zoom {fetch_zoom} must be 0 to {MAX_ZOOM_STEP} levels finer "
            f"than scan zoom {zoom} (and at most 23)"
        )
    if request.HasField("tile"):
        t = request.tile
        try:
            tile = Tile(t.x, t.y, t.z)
        except ValueError as error:
            raise PoisonMessage(f"scan {scan_id}: invalid tile: {error}") from None
        if tile.z != zoom:
            raise PoisonMessage(f"scan {scan_id}: tile {tile} is not at the scan zoom {zoom}")
        expected = request.tiles_expected or 1
        provider = request.provider or default_provider
        return ScanPlan(scan_id, zoom, fetch_zoom, provider, (tile,), expected, single=True)
    try:
        if request.HasField("bbox"):
            b = request.bbox
            tiles = tiles_for_region((b.west, b.south, b.east, b.north), zoom, max_tiles)
        elif request.geojson:
            tiles = tiles_for_region(parse_geojson(request.geojson), zoom, max_tiles)
        else:
            raise InvalidRegion("no bbox and no GeoJSON region")
    except InvalidRegion as error:
        raise PoisonMessage(f"scan {scan_id}: invalid region: {error}") from None
    if not tiles:
        raise PoisonMessage(f"scan {scan_id}: the region covers no zoom-{zoom} tile")
    provider = request.provider or default_provider
    return ScanPlan(scan_id, zoom, fetch_zoom, provider, tuple(tiles), len(tiles))


def split_request(request: pb.ScanRequest, plan: ScanPlan) -> list[pb.ScanRequest]:
    """One request per scan tile of a region request, each carrying the scan's tile count."""
    out = []
    for tile in plan.tiles:
        one = pb.ScanRequest()
        one.CopyFrom(request)
        one.tile.CopyFrom(pb.TileCoord(z=tile.z, x=tile.x, y=tile.y, quadkey=tile.quadkey))
        one.zoom, one.fetch_zoom, one.provider = plan.zoom, plan.fetch_zoom, plan.provider
        one.tiles_expected = plan.tiles_expected
        out.append(one)
    return out


def tile_message(
    scan_tile: Tile,
    *,
    scan_id: str,
    provider: str,
    imagery_date: str,
    image_key: str,
    width: int,
    height: int,
    tiles_expected: int,
    demo: bool,
    models: pb.ModelVersions | None = None,
) -> pb.Tile:
    """The message announcing one stored scan tile on the `tiles` topic, stamped with the models
    that are to score it (decided here, once per tile)."""
    return pb.Tile(
        tile_id=scan_tile.quadkey,
        scan_id=scan_id,
        tile=pb.TileCoord(z=scan_tile.z, x=scan_tile.x, y=scan_tile.y, quadkey=scan_tile.quadkey),
        provider=provider,
        imagery_date=imagery_date,
        image_key=image_key,
        width=width,
        height=height,
        tiles_expected=tiles_expected,
        demo=demo,
        models=models,
    )


def should_skip(
    scanned: Iterable[tuple[str, str]], imagery_date: str, model: str, rescan: bool
) -> bool:
    """Whether a tile needs no new scan.

    Args:
        scanned: (imagery_date, model version) pairs the tile was already scanned with.
        imagery_date: The capture date of the imagery now offered ("" when unknown).
        model: The model version the scan would use.
        rescan: The request asks to scan again regardless.

    Returns:
        True when the same imagery (a known date) was already scanned with the same model and
        no rescan is asked. An unknown date never skips: new imagery cannot be ruled out.
    """
    if rescan or not imagery_date:
        return False
    return (imagery_date, model) in set(scanned)


def latest_date(dates: Iterable[str]) -> str:
    """The latest of some ISO dates, ignoring empty ones ("" when none is known)."""
    known = [d for d in dates if d]
    return max(known) if known else ""


def normalize_date(text: str) -> str:
    """An imagery date as ISO 8601 (YYYY-MM-DD): accepts ISO dates/datetimes, "31 Dec 2012" and
    TIFF's "2017:05:01 10:00:00".

    Returns "" for an empty or unreadable date (the provider then does not say).
    """
    text = text.strip()
    if not text:
        return ""
    # The last two are TIFF's DateTime ("2017:05:01 10:00:00") and its date alone.
    formats = ("%Y-%m-%d", "%d %b %Y", "%d %B %Y", "%Y%m%d", "%Y:%m:%d %H:%M:%S", "%Y:%m:%d")
    for fmt in formats:
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        return ""


def date_in_range(imagery_date: str, date_from: str, date_to: str) -> bool:
    """Whether an ISO capture date lies within [date_from, date_to] (empty bounds are open).

    An unknown capture date ("") is accepted: it cannot be shown to be outside.
    """
    if not imagery_date:
        return True
    if date_from and imagery_date < normalize_date(date_from):
        return False
    return not (date_to and imagery_date > normalize_date(date_to))
