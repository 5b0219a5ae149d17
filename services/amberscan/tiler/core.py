"""Tiler core: planning a scan's tiles, splitting a region request, the Tile message and the
skip decision.

Pure: Tile values and protobuf values in and out; no I/O. A scan tile is one zoom-16
web-mercator tile (its id is its quadkey); which provider tiles make it and how they are
stitched is `amberscan.imagery.grid`, capture dates are `amberscan.imagery.dates`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from amberscan.errors import InvalidRegion, PoisonMessage
from amberscan.geo.tiles import (
    DEFAULT_FETCH_ZOOM,
    DEFAULT_MAX_TILES,
    DEFAULT_SCAN_ZOOM,
    Tile,
    parse_geojson,
    tiles_for_region,
)
from amberscan.v1 import messages_pb2 as pb

# A scan tile is at most 8×8 provider tiles (2048 px): larger images would not fit the method
# (tuned for ~1000 px at ~0.4 m/px) and would only cost memory.
MAX_ZOOM_STEP = 3


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
    template = pb.ScanRequest()
    template.CopyFrom(request)
    template.ClearField("region")  # copied once, not once per tile (a region can be megabytes)
    out = []
    for tile in plan.tiles:
        one = pb.ScanRequest()
        one.CopyFrom(template)
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
