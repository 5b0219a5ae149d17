"""OGC WMTS: capabilities read with OWSLib, tiles of a Web Mercator TileMatrixSet fetched like
XYZ tiles (REST `ResourceURL` template, else KVP GetTile).

Vintages: each value of a layer's Time dimension, or, for an archive that publishes one layer per
release, each layer named (its date from its Time default, else an ISO date in its identifier or
title, else the scan's imagery date).
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from shapely import geometry as sg
from shapely.geometry.base import BaseGeometry

from amberscan.geo.tiles import PROVIDER_TILE_PX, Tile
from amberscan.imagery.dates import date_in_range, normalize_date
from amberscan.imagery.providers.base import (
    Discovery,
    FetchedTile,
    ProviderError,
    ScanImage,
    SourceError,
    stitch_children,
)
from amberscan.imagery.providers.http import Fetcher, redact

# Web Mercator: the top-left corner and the scale denominator of zoom 0 for 256-px tiles
# (OGC's 0.28 mm "standardized rendering pixel"), as GoogleMapsCompatible defines them.
MERCATOR_EDGE = 20037508.342789244
SCALE_Z0 = 559082264.0287178
MERCATOR_CRS = re.compile(
    r"(EPSG:{1,2}(3857|900913|3785|102100|102113)|GoogleMapsCompatible)$", re.I
)
_ISO_DATE = re.compile(r"(\d{4}-\d{2}-\d{2}|\d{8})")


@dataclass(frozen=True)
class Vintage:
    """One dated release: a layer, its Time value ("" none) and the ISO capture date."""

    layer: str
    time: str
    date: str


@dataclass(frozen=True)
class MatrixSet:
    """A layer's Web Mercator TileMatrixSet: its identifier and the TileMatrix id of each zoom."""

    identifier: str
    matrices: dict[int, str]


def mercator_matrices(matrix_set: Any) -> dict[int, str]:
    """zoom → TileMatrix identifier of a TileMatrixSet, if it is Web Mercator with 256-px tiles
    on the standard grid ({} otherwise)."""
    crs = (matrix_set.crs or "").replace("urn:ogc:def:crs:", "").replace("::", ":")
    if not MERCATOR_CRS.search(crs) and matrix_set.identifier != "GoogleMapsCompatible":
        return {}
    found = {}
    for identifier, matrix in matrix_set.tilematrix.items():
        zoom = math.log2(SCALE_Z0 / matrix.scaledenominator)
        left, top = matrix.topleftcorner
        if (
            abs(zoom - round(zoom)) < 1e-6
            and matrix.tilewidth == PROVIDER_TILE_PX == matrix.tileheight
            and abs(left + MERCATOR_EDGE) < 1.0
            and abs(top - MERCATOR_EDGE) < 1.0
        ):
            found[round(zoom)] = identifier
    return found


class WmtsProvider:
    """Scan tiles from a WMTS layer (or one layer per release).

    Args:
        url: The GetCapabilities URL.
        layers: Layer identifiers (empty: the only layer the service has).
        fetcher: HTTP for capabilities and tiles.
        imagery_date: Capture date of a layer that has no Time dimension nor a date in its name.
    """

    def __init__(
        self,
        url: str,
        layers: tuple[str, ...],
        fetcher: Fetcher,
        *,
        imagery_date: str = "",
        name: str = "wmts",
    ) -> None:
        if not url:
            raise SourceError(
                "provider 'wmts' needs capabilities: --source URL or AMBERSCAN_WMTS_URL"
            )
        self.url = url
        self.layers = layers
        self.fetcher = fetcher
        self.fallback_date = normalize_date(imagery_date)
        self.name = name
        self._service: Any = None
        self._lock = asyncio.Lock()

    async def capabilities(self, again: bool = False) -> Any:
        """The parsed capabilities (fetched once; `again` fetches them anew)."""
        from owslib.wmts import WebMapTileService

        async with self._lock:
            if self._service is None or again:
                body, _ = await self.fetcher.get(self.url)
                try:
                    self._service = WebMapTileService(self.url, xml=body)
                except Exception as error:  # noqa: BLE001 - lxml and OWSLib raise many types
                    raise SourceError(
                        f"WMTS {redact(self.url)}: not a capabilities document ({error})"
                    ) from None
            return self._service

    async def _layers(self) -> list[Any]:
        service = await self.capabilities()
        names = self.layers or tuple(service.contents)
        if not self.layers and len(names) != 1:
            raise SourceError(
                f"WMTS {redact(self.url)}: {len(names)} layers, name one with --layer "
                f"({', '.join(sorted(names)[:20])})"
            )
        missing = [n for n in names if n not in service.contents]
        if missing:
            raise SourceError(
                f"WMTS {redact(self.url)}: no layer {', '.join(missing)} "
                f"(it has {', '.join(sorted(service.contents)[:20])})"
            )
        return [service.contents[n] for n in names]

    async def matrix_set(self, layer: Any) -> MatrixSet:
        """The layer's Web Mercator TileMatrixSet.

        Raises:
            SourceError: the layer has none (names the sets it does have).
        """
        service = await self.capabilities()
        for identifier in layer.tilematrixsetlinks:
            matrices = mercator_matrices(service.tilematrixsets[identifier])
            if matrices:
                return MatrixSet(identifier, matrices)
        offered = ", ".join(
            f"{i} ({service.tilematrixsets[i].crs})" for i in layer.tilematrixsetlinks
        )
        raise SourceError(
            f"WMTS layer {layer.id!r}: no Web Mercator TileMatrixSet (EPSG:3857, 256-px tiles on "
            f"the GoogleMapsCompatible grid); it offers {offered or 'none'}"
        )

    async def all_vintages(self) -> list[Vintage]:
        """Every (layer, time) release, oldest first."""
        found = []
        for layer in await self._layers():
            await self.matrix_set(layer)  # a layer only on other grids is refused first
            time_dim = _time_dimension(layer)
            if time_dim is not None:
                for value in time_dim.get("values") or []:
                    if date := normalize_date(value):
                        found.append(Vintage(layer.id, value, date))
                continue
            date = _date_in(layer.id) or _date_in(layer.title or "") or self.fallback_date
            if not date:
                raise SourceError(
                    f"WMTS layer {layer.id!r}: no Time dimension and no date in its name; pass "
                    "--imagery-date YYYY-MM-DD"
                )
            found.append(Vintage(layer.id, "", date))
        return sorted(found, key=lambda v: (v.date, v.layer))

    async def vintage(self, date: str = "") -> Vintage:
        """The release of `date` (ISO), or the newest."""
        found = await self.all_vintages()
        if not found:
            raise SourceError(f"WMTS {redact(self.url)}: the layer's Time dimension lists no date")
        if not date:
            return found[-1]
        matching = [v for v in found if v.date == normalize_date(date)]
        if not matching:
            found = await self._refreshed()
            matching = [v for v in found if v.date == normalize_date(date)]
        if not matching:
            raise SourceError(
                f"WMTS {redact(self.url)}: no release dated {date} "
                f"(it has {', '.join(v.date for v in found)})"
            )
        return matching[-1]

    async def _refreshed(self) -> list[Vintage]:
        await self.capabilities(again=True)
        return await self.all_vintages()

    async def tile_url(self, vintage: Vintage, tile: Tile) -> str:
        service = await self.capabilities()
        layer = service.contents[vintage.layer]
        matrix_set = await self.matrix_set(layer)
        if tile.z not in matrix_set.matrices:
            raise SourceError(
                f"WMTS layer {layer.id!r}: TileMatrixSet {matrix_set.identifier} has no zoom {tile.z}"
            )
        values = {
            "TileMatrixSet": matrix_set.identifier,
            "TileMatrix": matrix_set.matrices[tile.z],
            "TileRow": str(tile.y),
            "TileCol": str(tile.x),
            "Style": _style(layer),
        }
        for name, dim in layer.dimensions.items():
            values[name] = vintage.time if name.lower() == "time" else str(dim.get("default") or "")
        templates = [r for r in layer.resourceURLs if r.get("resourceType") == "tile"]
        if templates:
            url = str(templates[0]["template"])
            for key, value in values.items():
                url = re.sub(r"\{" + re.escape(key) + r"\}", value, url, flags=re.I)
            return url
        return self._kvp_url(service, layer, values)

    def _kvp_url(self, service: Any, layer: Any, values: dict[str, str]) -> str:
        try:
            methods = service.getOperationByName("GetTile").methods
            base = next(m["url"] for m in methods if m.get("type", "Get").lower() == "get")
        except (KeyError, StopIteration):
            raise ProviderError(
                f"WMTS {redact(self.url)}: no tile URL (ResourceURL or GetTile)"
            ) from None
        query = {
            "SERVICE": "WMTS",
            "REQUEST": "GetTile",
            "VERSION": "1.0.0",
            "LAYER": layer.id,
            "STYLE": values.pop("Style"),
            "FORMAT": (layer.formats or ["image/png"])[0],
            **{k.upper(): v for k, v in values.items()},
        }
        return f"{base.rstrip('?&')}{'&' if '?' in base else '?'}{urlencode(query)}"

    async def scan_image(self, scan_tile: Tile, fetch_zoom: int, vintage: str = "") -> ScanImage:
        release = await self.vintage(vintage)

        async def fetch(tile: Tile) -> FetchedTile:
            url = await self.tile_url(release, tile)
            body, _ = await self.fetcher.get(url)
            return FetchedTile(body, f"tile {tile} ({redact(url)})", release.date)

        image, _ = await stitch_children(fetch, scan_tile, fetch_zoom)
        where = f"WMTS layer {release.layer}" + (f" time {release.time}" if release.time else "")
        return ScanImage(image, release.date, 1.0, where)

    async def footprint(self, date_from: str = "", date_to: str = "") -> BaseGeometry:
        boxes: list[tuple[float, float, float, float]] = [
            layer.boundingBoxWGS84
            for layer in await self._layers()
            if hasattr(layer, "boundingBoxWGS84")
        ]
        if not boxes or len(boxes) < len(await self._layers()):
            raise SourceError(
                f"WMTS {redact(self.url)}: the layer has no WGS84BoundingBox; give --bbox"
            )
        return sg.MultiPolygon([sg.box(*b) for b in boxes]).buffer(0)

    async def vintages(
        self, region: BaseGeometry, date_from: str = "", date_to: str = ""
    ) -> list[str]:
        return sorted(
            {v.date for v in await self._refreshed() if date_in_range(v.date, date_from, date_to)}
        )

    async def discover(self, tiles: list[Tile], cursor: str) -> Discovery:
        """Every tile at the newest release, when it is newer than `cursor` (a date)."""
        releases = await self._refreshed()
        if not releases or (cursor and releases[-1].date <= cursor):
            return Discovery({}, cursor)
        newest = releases[-1]
        return Discovery(dict.fromkeys(tiles, newest.date), newest.date)

    async def close(self) -> None:
        await self.fetcher.close()


def _time_dimension(layer: Any) -> dict[str, Any] | None:
    for name, dim in layer.dimensions.items():
        if name.lower() == "time":
            return dict(dim)
    return None


def _style(layer: Any) -> str:
    for name, style in layer.styles.items():
        if style.get("isDefault"):
            return str(name)
    return next(iter(layer.styles), "default")


def _date_in(text: str) -> str:
    match = _ISO_DATE.search(text)
    return normalize_date(match.group(1)) if match else ""
