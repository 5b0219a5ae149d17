"""What every imagery provider offers its readers (the tiler, the watcher, the scan command): a
scan tile's image, its capture date and how much of the tile the imagery covers; and the errors
providers raise.

Two kinds of provider implement `Provider.scan_image`. Tile servers (XYZ, Bing, a local folder,
WMTS) hand out 256-px tiles: `TileProvider` fetches a scan tile's children and stitches them.
Rasters (GeoTIFF/COG files, STAC items) are read whole-tile at once with rio-tiler, reprojected
to the scan tile's web-mercator grid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from amberscan.errors import PoisonMessage
from amberscan.geo.tiles import PROVIDER_TILE_PX, Tile
from amberscan.imagery.grid import plan_children, stitch
from amberscan.vision.imageio import decode_image

DATE_HEADER = "X-Imagery-Date"


class TileNotFound(PoisonMessage):
    """The provider has no such tile (404, or an explicit "no imagery here" answer)."""


class ProviderError(PoisonMessage):
    """The provider refused the request for good (a 4xx other than 404/429, bad metadata)."""


class SourceError(PoisonMessage):
    """A raster source or catalogue that cannot be used (missing, no CRS, too coarse, no date)."""


class SourceRefused(SourceError):
    """A source the source policy refuses (`amberscan/sources.py`): for good, never retried."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"source {source} refused: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class FetchedTile:
    """The encoded bytes of one provider tile, where they came from and their capture date."""

    data: bytes
    source: str
    imagery_date: str = ""


@dataclass(frozen=True)
class ScanImage:
    """A scan tile image, its capture date ("" when the provider does not say), the share of the
    tile the imagery covers (the rest is nodata, left black) and where the pixels came from."""

    image: NDArray[np.uint8]
    imagery_date: str
    coverage: float = 1.0
    source: str = ""


@dataclass(frozen=True)
class SourceSpec:
    """Which imagery a scan reads: the provider and, for raster and WMTS providers, its sources.

    Attributes:
        provider: "xyz", "bing", "local", "demo", "geotiff", "stac" or "wmts".
        sources: GeoTIFF paths/URLs/`s3://` keys (or folders and prefixes of them); for STAC and
            WMTS one catalogue or capabilities URL (empty: the configured one).
        collection: The STAC collection.
        layers: WMTS layers (several: one per release).
        imagery_date: The capture date of sources that carry none (`--imagery-date`).
    """

    provider: str
    sources: tuple[str, ...] = ()
    collection: str = ""
    layers: tuple[str, ...] = ()
    imagery_date: str = ""

    @classmethod
    def from_request(cls, request: Any, provider: str = "") -> SourceSpec:
        """The sources a `ScanRequest` names (`provider`: the one planned, else the request's)."""
        return cls(
            provider or request.provider,
            tuple(request.sources),
            request.collection,
            tuple(request.layers),
            request.imagery_date,
        )


@dataclass(frozen=True)
class Discovery:
    """What a provider offers in a region now: the newest capture date per scan tile (tiles it
    has nothing for are absent), and a cursor to pass back next time (what was last seen)."""

    dates: Mapping[Tile, str]
    cursor: str = ""
    notes: tuple[str, ...] = field(default=())


class Provider(Protocol):
    name: str

    async def scan_image(self, scan_tile: Tile, fetch_zoom: int, vintage: str = "") -> ScanImage:
        """The image of one scan tile: the newest imagery, or that of `vintage` (an ISO date)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Catalogue(Protocol):
    """A provider that can say what it holds without reading pixels (rasters, STAC, WMTS)."""

    async def footprint(self, date_from: str = "", date_to: str = "") -> BaseGeometry:
        """The union of the imagery's footprints (WGS84)."""
        ...

    async def vintages(
        self, region: BaseGeometry, date_from: str = "", date_to: str = ""
    ) -> list[str]:
        """The capture dates (ISO) of imagery over `region`, oldest first."""
        ...

    async def discover(self, tiles: list[Tile], cursor: str) -> Discovery:
        """The newest capture date of each of `tiles`, from what appeared since `cursor`."""
        ...


class TileProvider:
    """A provider of 256-px tiles: a scan tile is its children at the fetch zoom, stitched."""

    name = "tiles"

    async def fetch(self, tile: Tile) -> FetchedTile:
        """The bytes of one provider tile."""
        raise NotImplementedError

    async def imagery_date(self, scan_tile: Tile, fetch_zoom: int, child_dates: list[str]) -> str:
        """The capture date of a scan tile's imagery."""
        raise NotImplementedError

    async def scan_image(self, scan_tile: Tile, fetch_zoom: int, vintage: str = "") -> ScanImage:
        return await fetch_scan_tile(self, scan_tile, fetch_zoom)

    async def close(self) -> None:
        return None


async def stitch_children(
    fetch: Callable[[Tile], Awaitable[FetchedTile]], scan_tile: Tile, fetch_zoom: int
) -> tuple[NDArray[np.uint8], list[FetchedTile]]:
    """Fetch, decode and stitch the children of `scan_tile` at `fetch_zoom` with `fetch`.

    Raises:
        PoisonMessage: a child is missing (404) or not a usable image; the message names it.
        TransientError: the provider did not answer after its retries.
    """
    children = plan_children(scan_tile, fetch_zoom)
    fetched = await asyncio.gather(*(fetch(c.tile) for c in children))

    def decode() -> NDArray[np.uint8]:
        # Each child's declared size is checked before its pixels are decoded (#26, defect 7).
        images = [decode_image(f.data, f.source, max_pixels=PROVIDER_TILE_PX**2) for f in fetched]
        return stitch(children, images)

    return await asyncio.to_thread(decode), list(fetched)


async def fetch_scan_tile(provider: TileProvider, scan_tile: Tile, fetch_zoom: int) -> ScanImage:
    """Fetch, decode and stitch the provider tiles of one scan tile.

    Raises:
        PoisonMessage: a child is missing (404) or not a usable image; the message names it.
        TransientError: the provider did not answer after its retries.
    """
    image, fetched = await stitch_children(provider.fetch, scan_tile, fetch_zoom)
    date = await provider.imagery_date(scan_tile, fetch_zoom, [f.imagery_date for f in fetched])
    return ScanImage(image, date)


def header(headers: Mapping[str, str], name: str) -> str:
    """The value of header `name` (any case), "" when absent."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return ""
