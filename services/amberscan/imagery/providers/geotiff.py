"""GeoTIFF / Cloud-Optimized GeoTIFF files: local paths, HTTP(S) URLs and `s3://` keys.

A source is a file, a local folder or glob of them, or an `s3://bucket/prefix/` (ending in "/"):
folders and prefixes are listed again at each look, so files added later are found (what
`amberscan watch` relies on). Each file is inspected once (footprint, resolution, bands, capture
date). A scan tile is read from the newest date whose files cover enough of it, mosaicked.
"""

from __future__ import annotations

import asyncio
import glob
from collections.abc import Callable, Sequence
from pathlib import Path

from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from amberscan.geo.tiles import Tile
from amberscan.imagery.dates import date_in_range
from amberscan.imagery.providers.base import Discovery, ScanImage, SourceError
from amberscan.imagery.providers.raster import (
    RasterInfo,
    RasterOptions,
    blank,
    inspect,
    read_tile,
)
from amberscan.imagery.rasters import choose_sources, newest_dates

RASTER_SUFFIXES = (".tif", ".tiff")
# Lists the keys under an s3://bucket/prefix/ (the blob store's client in the service).
S3Lister = Callable[[str, str], list[str]]


class GeotiffProvider:
    """Scan tiles read from GeoTIFF/COG sources.

    Args:
        sources: Paths, URLs, `s3://` keys, local folders/globs or `s3://…/` prefixes.
        options: GDAL options and the resolution/coverage limits.
        imagery_date: Capture date of files whose tags name none ("" refuses them).
        list_s3: Lists an S3 prefix's keys (needed only for `s3://…/` prefixes).

    The source policy is `options.guard`: a folder, glob or prefix is checked before it is
    listed, and each file before and as it is read (`raster.inspect`, `raster.read_tile`).
    """

    def __init__(
        self,
        sources: Sequence[str],
        options: RasterOptions,
        *,
        imagery_date: str = "",
        list_s3: S3Lister | None = None,
        name: str = "geotiff",
    ) -> None:
        if not sources:
            raise SourceError("provider 'geotiff' needs at least one source (--source PATH_OR_URL)")
        self.sources = tuple(sources)
        self.options = options
        self.fallback_date = imagery_date
        self.list_s3 = list_s3
        self.guard = options.guard
        self.name = name
        self._infos: dict[str, RasterInfo] = {}
        self._lock = asyncio.Lock()

    def expand(self) -> list[str]:
        """The files the sources name now (folders, globs and prefixes listed; blocking).

        Raises:
            SourceError: a local file or folder does not exist, or a folder/prefix holds none.
            SourceRefused: the source policy refuses a source (before it is listed).
        """
        files: list[str] = []
        for source in self.sources:
            if source.startswith(("http://", "https://")):
                files.append(source)
            elif source.startswith("s3://"):
                self.guard.check_bucket(source)
                files += self._expand_s3(source)
            else:
                self.guard.check(source)  # the file, folder or glob's fixed part
                files += _expand_local(source)
        return list(dict.fromkeys(files))

    def _expand_s3(self, source: str) -> list[str]:
        if not source.endswith("/"):
            return [source]
        if self.list_s3 is None:
            raise SourceError(f"geotiff source {source}: cannot list S3 prefixes here")
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        keys = [k for k in self.list_s3(bucket, prefix) if k.lower().endswith(RASTER_SUFFIXES)]
        if not keys:
            raise SourceError(f"geotiff source {source}: no .tif/.tiff object under it")
        return [f"s3://{bucket}/{key}" for key in sorted(keys)]

    async def rasters(self) -> list[RasterInfo]:
        """Every file of the sources, inspected (new files are inspected on first sight).

        Raises:
            SourceError: a file is missing or cannot be scanned (the message names it).
        """
        files = await asyncio.to_thread(self.expand)
        async with self._lock:
            new = [f for f in files if f not in self._infos]
            found = await asyncio.gather(
                *(asyncio.to_thread(inspect, f, self.options, self.fallback_date) for f in new)
            )
            self._infos.update(zip(new, found, strict=True))
        return [self._infos[f] for f in files]

    async def footprint(self, date_from: str = "", date_to: str = "") -> BaseGeometry:
        return unary_union([r.footprint for r in await self.rasters()])

    async def vintages(
        self, region: BaseGeometry, date_from: str = "", date_to: str = ""
    ) -> list[str]:
        return sorted(
            {
                r.imagery_date
                for r in await self.rasters()
                if r.footprint.intersects(region)
                and date_in_range(r.imagery_date, date_from, date_to)
            }
        )

    async def discover(self, tiles: list[Tile], cursor: str) -> Discovery:
        dated = [r.dated() for r in await self.rasters()]
        dates = newest_dates([(t, t.bounds()) for t in tiles], dated, self.options.min_coverage)
        return Discovery(dates, cursor="")

    async def scan_image(self, scan_tile: Tile, fetch_zoom: int, vintage: str = "") -> ScanImage:
        infos = {r.href: r for r in await self.rasters()}
        date, chosen = choose_sources(
            scan_tile.bounds(),
            [r.dated() for r in infos.values()],
            vintage,
            self.options.min_coverage,
        )
        if not chosen:
            return blank(scan_tile, fetch_zoom, vintage, "no raster over the tile")
        rasters = [infos[c.key] for c in chosen]
        return await asyncio.to_thread(read_tile, rasters, scan_tile, fetch_zoom, self.options)

    async def close(self) -> None:
        return None


def _expand_local(source: str) -> list[str]:
    path = Path(source.removeprefix("file://"))
    if any(ch in source for ch in "*?["):
        files = sorted(glob.glob(str(path), recursive=True))
        if not files:
            raise SourceError(f"geotiff source {source}: no file matches")
        return files
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES)
        if not files:
            raise SourceError(f"geotiff source {source}: no .tif/.tiff file in the folder")
        return files
    if not path.exists():
        raise SourceError(f"raster {source}: no such file")
    return [str(path)]
