"""STAC: an API's item search, or a static catalogue walked link by link (pystac-client).

Each item is a dated source: its `datetime` (or `start_datetime`) is its capture date, its
geometry its footprint, and its visual/RGB asset the pixels, read with rio-tiler like any COG.
A scan tile is read from the newest item date that covers enough of it (or the date asked for).
An API is asked per scan tile (bbox, datetime range, collection); a static catalogue is walked
once and kept, walked again when a date asked for is missing from it (a newer item was added).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from shapely import geometry as sg
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from amberscan.errors import TransientError
from amberscan.geo.tiles import Tile
from amberscan.imagery.dates import date_in_range, normalize_date
from amberscan.imagery.providers.base import Discovery, ScanImage, SourceError, SourceRefused
from amberscan.imagery.providers.raster import RasterInfo, RasterOptions, blank, inspect, read_tile
from amberscan.imagery.rasters import Dated, choose_sources, newest_dates

log = logging.getLogger(__name__)

# Asset keys holding true-colour imagery, in order of preference (the `visual` role wins first).
VISUAL_KEYS = ("visual", "rgb", "image", "ortho", "orthophoto", "data")
# A static catalogue is walked again at most this often when a scan asks for a missing date.
REWALK_S = 1.0


@dataclass(frozen=True)
class StacEntry:
    """One item: id, capture date, footprint (WGS84), the href of its visual asset."""

    item_id: str
    date: str
    stamp: str  # the item's datetime as given, for the watch cursor
    footprint: BaseGeometry
    href: str

    def dated(self) -> Dated:
        return Dated(self.href, self.date, self.footprint)


def _item_entry(item: Any) -> StacEntry | None:
    stamp = item.datetime or _parse(item.properties.get("start_datetime"))
    if stamp is None or item.geometry is None:
        return None
    asset = _visual_asset(item)
    if asset is None:
        raise SourceError(
            f"STAC item {item.id}: no visual/RGB asset (assets: {', '.join(item.assets) or 'none'})"
        )
    return StacEntry(
        item.id,
        stamp.date().isoformat(),
        stamp.astimezone(dt.UTC).isoformat() if stamp.tzinfo else stamp.isoformat(),
        sg.shape(item.geometry),
        asset.get_absolute_href() or asset.href,
    )


def _parse(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _visual_asset(item: Any) -> Any:
    for asset in item.assets.values():
        if "visual" in (asset.roles or []):
            return asset
    for key in VISUAL_KEYS:
        if key in item.assets:
            return item.assets[key]
    return None


class StacProvider:
    """Scan tiles read from the items of a STAC API or static catalogue.

    Args:
        url: The API's landing page or the catalogue's (or a collection's) JSON.
        options: GDAL options and the resolution/coverage limits.
        collection: Only items of this collection ("" any).
        timeout_s: Timeout of one catalogue request.

    The source policy for the catalogue, every link it follows and every asset href is
    `options.guard`.
    """

    def __init__(
        self,
        url: str,
        options: RasterOptions,
        *,
        collection: str = "",
        timeout_s: float = 30.0,
        name: str = "stac",
    ) -> None:
        if not url:
            raise SourceError(
                "provider 'stac' needs a catalogue: --source URL or AMBERSCAN_STAC_URL"
            )
        self.url = url
        self.options = options
        self.collection = collection
        self.timeout_s = timeout_s
        self.guard = options.guard
        self.name = name
        self._client: Any = None
        self._static: list[StacEntry] | None = None
        self._walked_at = 0.0
        self._infos: dict[str, RasterInfo] = {}
        self._lock = asyncio.Lock()

    def _open(self) -> Any:
        from pystac_client import Client

        if self._client is None:
            try:
                stac_io = self.guard.stac_io(self.timeout_s)
                self._client = Client.open(self.url, timeout=self.timeout_s, stac_io=stac_io)
            except (SourceRefused, TransientError):
                raise
            except Exception as error:  # noqa: BLE001 - requests, pystac and API errors alike
                raise _catalogue_error(self.url, error) from None
        return self._client

    def _is_api(self) -> bool:
        from pystac_client import ConformanceClasses

        return bool(self._open().conforms_to(ConformanceClasses.ITEM_SEARCH))

    def _search(
        self, bbox: tuple[float, ...] | None, date_from: str, date_to: str
    ) -> list[StacEntry]:
        """Items over `bbox` within the dates (blocking)."""
        client = self._open()
        try:
            if self._is_api():
                search = client.search(
                    collections=[self.collection] if self.collection else None,
                    bbox=list(bbox) if bbox else None,
                    datetime=_interval(date_from, date_to),
                )
                entries = [e for e in map(_item_entry, search.items()) if e is not None]
            else:
                entries = self._walk()
        except (SourceError, TransientError):
            raise
        except Exception as error:  # noqa: BLE001
            raise _catalogue_error(self.url, error) from None
        box = sg.box(*bbox) if bbox else None
        return [
            e
            for e in entries
            if (box is None or e.footprint.intersects(box))
            and date_in_range(e.date, date_from, date_to)
        ]

    def _walk(self, again: bool = False) -> list[StacEntry]:
        if self._static is None or again:
            if again:
                self._client = None  # pystac keeps the links it resolved: open anew
            items = self._open().get_items(recursive=True)
            if self.collection:
                items = (i for i in items if i.collection_id == self.collection)
            self._static = [e for e in map(_item_entry, items) if e is not None]
            self._walked_at = time.monotonic()
        return self._static

    async def entries(
        self, bbox: tuple[float, ...] | None = None, date_from: str = "", date_to: str = ""
    ) -> list[StacEntry]:
        """The items over `bbox` between the dates.

        Raises:
            TransientError: the catalogue does not answer (names its URL).
            SourceError: it answers with something that is not STAC, or an item lacks a visual asset.
        """
        async with self._lock:
            return await asyncio.to_thread(self._search, bbox, date_from, date_to)

    async def _rewalk(self) -> None:
        async with self._lock:
            if self._static is not None and time.monotonic() - self._walked_at > REWALK_S:
                await asyncio.to_thread(self._walk, True)

    async def footprint(self, date_from: str = "", date_to: str = "") -> BaseGeometry:
        found = await self.entries(None, date_from, date_to)
        if not found:
            raise SourceError(
                f"STAC catalogue {self.url}: no item{self._which(date_from, date_to)}"
            )
        return unary_union([e.footprint for e in found])

    def _which(self, date_from: str, date_to: str) -> str:
        parts = [f" in collection {self.collection!r}" if self.collection else ""]
        if date_from or date_to:
            parts.append(f" dated {date_from or '…'} to {date_to or '…'}")
        return "".join(parts)

    async def vintages(
        self, region: BaseGeometry, date_from: str = "", date_to: str = ""
    ) -> list[str]:
        found = await self.entries(region.bounds, date_from, date_to)
        return sorted({e.date for e in found if e.footprint.intersects(region)})

    async def discover(self, tiles: list[Tile], cursor: str) -> Discovery:
        """Items dated at or after `cursor` (an item datetime; "" all), newest per tile."""
        if not tiles:
            return Discovery({}, cursor)
        bounds = [t.bounds() for t in tiles]
        region = (
            min(b[0] for b in bounds),
            min(b[1] for b in bounds),
            max(b[2] for b in bounds),
            max(b[3] for b in bounds),
        )
        if self._static is not None:
            await self._rewalk()
        found = await self.entries(region, cursor[:10] if cursor else "")
        fresh = [e for e in found if not cursor or e.stamp >= cursor]
        dates = newest_dates(
            [(t, b) for t, b in zip(tiles, bounds, strict=True)],
            [e.dated() for e in fresh],
            self.options.min_coverage,
        )
        newest = max([cursor, *(e.stamp for e in fresh)])
        return Discovery(dates, newest)

    async def scan_image(self, scan_tile: Tile, fetch_zoom: int, vintage: str = "") -> ScanImage:
        found = await self.entries(scan_tile.bounds())
        if vintage and self._static is not None and not any(e.date == vintage for e in found):
            await self._rewalk()  # a newer item may have been added since the walk
            found = await self.entries(scan_tile.bounds())
        by_href = {e.href: e for e in found}
        date, chosen = choose_sources(
            scan_tile.bounds(), [e.dated() for e in found], vintage, self.options.min_coverage
        )
        if not chosen:
            what = f"no STAC item of {vintage}" if vintage else "no STAC item"
            return blank(scan_tile, fetch_zoom, vintage, f"{what} over the tile")
        rasters = [await self._info(by_href[c.key]) for c in chosen]
        image = await asyncio.to_thread(read_tile, rasters, scan_tile, fetch_zoom, self.options)
        items = ", ".join(by_href[c.key].item_id for c in chosen)
        return ScanImage(image.image, date, image.coverage, f"STAC item {items}")

    async def _info(self, entry: StacEntry) -> RasterInfo:
        if entry.href not in self._infos:
            self._infos[entry.href] = await asyncio.to_thread(
                inspect, entry.href, self.options, entry.date
            )
        return self._infos[entry.href]

    async def close(self) -> None:
        return None


def _interval(date_from: str, date_to: str) -> str | None:
    if not date_from and not date_to:
        return None
    start = normalize_date(date_from) or ".."
    end = f"{normalize_date(date_to)}T23:59:59Z" if date_to else ".."
    return f"{start}/{end}"


def _catalogue_error(url: str, error: Exception) -> Exception:
    text = f"{type(error).__name__}: {error}"
    lowered = text.lower()
    if any(w in lowered for w in ("connection", "timed out", "timeout", "unreachable", "refused")):
        return TransientError(f"STAC catalogue {url} is unreachable ({text})")
    if "404" in text or "not found" in lowered:
        return SourceError(f"STAC catalogue {url}: not found ({text})")
    return SourceError(f"STAC catalogue {url}: not a usable STAC catalogue or API ({text})")
