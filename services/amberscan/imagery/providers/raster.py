"""Reading rasters (GeoTIFF/COG files, STAC assets) as scan tiles with rasterio and rio-tiler.

A source is opened once to learn its footprint, resolution, bands, capture date and scaling rule
(`inspect`); a scan tile is then one rio-tiler `tile()` read per source at the scan tile's
web-mercator bounds and pixel size — reprojected from the source's CRS when it is not web
mercator — with rio-tiler's mosaic filling nodata from the next source of the same date. Nodata
values, alpha bands and internal masks all become the read's mask; the share of valid pixels is
the scan tile's coverage.

Local paths, HTTP(S) URLs (range requests, only the blocks a tile needs, made by
`checked_http.RangeOpener` under the source policy rather than by GDAL's curl) and
`s3://bucket/key` (GDAL's /vsis3/ against the configured S3 endpoint) are read alike. GDAL calls
block, so they run in a worker thread, each inside a `rasterio.Env` carrying the options.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from pyproj import Geod
from rasterio.errors import RasterioIOError
from rasterio.session import Session
from rasterio.warp import transform, transform_bounds
from rio_tiler.errors import EmptyMosaicError, TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from rio_tiler.mosaic import mosaic_reader
from shapely import geometry as sg

from amberscan.common.settings import RASTER_MAX_RESOLUTION_M, RASTER_MIN_COVERAGE, ImagerySettings
from amberscan.errors import TransientError
from amberscan.geo.tiles import PROVIDER_TILE_PX, Tile
from amberscan.imagery.dates import normalize_date
from amberscan.imagery.providers.base import ScanImage, SourceError
from amberscan.imagery.providers.guard import SourceGuard
from amberscan.imagery.rasters import (
    BandRule,
    Dated,
    band_rule,
    check_resolution,
    date_from_tags,
    rgb_bands,
    to_rgb8,
)

_GEOD = Geod(ellps="WGS84")
# The one GDAL driver a raster source is opened with: a VRT (or any format that names other
# files or URLs) would let a source point past the source policy (#26 defect 8).
RASTER_DRIVER = "GTiff"
# GDAL's and curl's words for a server that is down or slow (worth a retry), as opposed to a
# missing file or a source that can never be read (#26 defect 3): matched as curl writes them,
# not by a bare "SSL" or "timeout" (a certificate problem, or a TLS handshake with a server
# that speaks plain HTTP, fails the same way every time).
_TRANSIENT = re.compile(
    r"HTTP response code: (?:429|500|502|503|504)\b|couldn't connect to server|"
    r"(?:Connection|Operation|Resolving) timed out|Connection reset by peer|Connection refused|"
    r"Could not resolve host|Failed to connect|SSL_ERROR_SYSCALL|SSL connection timeout|"
    r"Send failure|Recv failure|Empty reply from server",
    re.I,
)


class S3Credentials(Session):  # type: ignore[misc]
    """The blob store's S3 credentials as a rasterio session (rasterio's own AWSSession needs
    boto3; GDAL only needs the two keys)."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key = access_key
        self.secret_key = secret_key

    @classmethod
    def hascreds(cls, config: Mapping[str, str]) -> bool:
        return "AWS_ACCESS_KEY_ID" in config and "AWS_SECRET_ACCESS_KEY" in config

    @property
    def credentials(self) -> dict[str, str]:
        return {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key}

    def get_credential_options(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


@dataclass(frozen=True)
class RasterOptions:
    """How rasters are opened and judged (from the settings).

    `guard` is the source policy every href is checked against before it is opened, and that
    reads http(s) rasters (`open_raster`); there is no unchecked default.
    """

    guard: SourceGuard
    gdal: Mapping[str, str] = field(default_factory=dict)
    s3_access_key: str = ""
    s3_secret_key: str = field(default="", repr=False)
    max_resolution_m: float = RASTER_MAX_RESOLUTION_M
    min_coverage: float = RASTER_MIN_COVERAGE
    # Retries of a range request a server answers 429 or 5xx (as GDAL_HTTP_MAX_RETRY did).
    http_retries: int = 0
    http_backoff_s: float = 0.5

    @classmethod
    def from_settings(cls, settings: ImagerySettings) -> RasterOptions:
        return cls(
            guard=SourceGuard.from_settings(settings),
            gdal=gdal_options(settings),
            s3_access_key=settings.s3.access_key,
            s3_secret_key=settings.s3.secret_key,
            max_resolution_m=settings.imagery.raster_max_resolution_m,
            min_coverage=settings.imagery.raster_min_coverage,
            http_retries=settings.retry.max_retries,
            http_backoff_s=settings.retry.backoff_s,
        )

    def env(self) -> rasterio.Env:
        """A rasterio environment with these options, for one blocking read."""
        return rasterio.Env(S3Credentials(self.s3_access_key, self.s3_secret_key), **self.gdal)


def gdal_options(settings: ImagerySettings) -> dict[str, str]:
    """GDAL configuration for its own HTTP, the `s3://` reads (http(s) sources are read by
    `open_raster`'s checked range requests, never by GDAL): timeouts and retries from the fetch
    settings, the blob store's endpoint (path-style, as MinIO serves; the keys come with
    `RasterOptions.env`)."""
    return {
        # A COG is read by its header and the blocks a tile needs; listing the "directory" of
        # each URL (GDAL's default, to find .aux/.ovr side files) would cost a request per file.
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_TIMEOUT": str(max(1, round(settings.imagery.fetch_timeout_s))),
        "GDAL_HTTP_MAX_RETRY": str(settings.retry.max_retries),
        "GDAL_HTTP_RETRY_DELAY": str(settings.retry.backoff_s),
        "VSI_CACHE": "TRUE",
        "AWS_S3_ENDPOINT": settings.s3.endpoint,
        "AWS_HTTPS": "YES" if settings.s3.secure else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


def checked_path(href: str, options: RasterOptions) -> str:
    """The path `open_raster` opens for `href`, once the source policy admits it: an http(s)
    URL by its scheme and host (its addresses and redirects are checked on every request that
    reads it, `open_raster`), an `s3://` key's bucket, a local file's real path under the roots.

    Raises:
        SourceRefused: the rule `href` breaks.
    """
    guard = options.guard
    if href.startswith(("http://", "https://")):
        guard.check_url(href, resolve=False)
        return href
    if href.startswith("s3://"):
        guard.check_bucket(href)
        return "/vsis3/" + href.removeprefix("s3://")
    return guard.check_path(href)


@contextmanager
def open_raster(path: str, options: RasterOptions) -> Iterator[Any]:
    """The raster at `path` (from `checked_path`) open with rasterio, as a context (blocking).

    An http(s) URL is read through `options.guard`'s range opener: GDAL never connects itself
    (its curl would follow redirects on every range read and resolve names on its own). A
    request the opener could not make fails the read with its own error, whatever GDAL made
    of the short read.

    Raises:
        SourceRefused: a redirect hop or address the policy refuses.
        SourceError / TransientError: the server's answer to a range request (names the file).
        RasterioIOError: what GDAL could not open or read otherwise.
    """
    if not path.startswith(("http://", "https://")):
        with rasterio.open(path, driver=RASTER_DRIVER) as src:
            yield src
        return
    opener = options.guard.range_opener(path, options.http_retries, options.http_backoff_s)
    try:
        try:
            with rasterio.open(path, driver=RASTER_DRIVER, opener=opener) as src:
                yield src
        except RasterioIOError:
            opener.raise_error()
            raise
        opener.raise_error()
    finally:
        opener.close()


@dataclass(frozen=True)
class RasterInfo:
    """What `inspect` learnt of one raster."""

    href: str
    path: str
    crs: str
    bounds: tuple[float, float, float, float]  # WGS84 (west, south, east, north)
    resolution_m: float
    imagery_date: str
    rule: BandRule
    nodata: float | None = None

    @property
    def footprint(self) -> sg.Polygon:
        return sg.box(*self.bounds)

    def dated(self) -> Dated:
        return Dated(self.href, self.imagery_date, self.footprint)


def _open_error(href: str, error: Exception) -> Exception:
    text = str(error)
    if _TRANSIENT.search(text):
        return TransientError(f"raster {href}: cannot read it now ({text})")
    if "No such file" in text or "does not exist" in text or "HTTP response code: 404" in text:
        return SourceError(f"raster {href}: no such file ({text})")
    return SourceError(f"raster {href}: cannot open it as a raster ({text})")


def inspect(href: str, options: RasterOptions, imagery_date: str = "") -> RasterInfo:
    """Open a raster and check it can be scanned (blocking; call from a thread).

    Args:
        href: Local path, HTTP(S) URL or `s3://bucket/key`.
        options: GDAL options and limits.
        imagery_date: The capture date to use when the file's tags name none ("" refuses such a
            file), or the date a catalogue gives (STAC item datetime), which then wins.

    Raises:
        SourceError: missing or unreadable, no CRS, coarser than the limit, bands unusable, or
            no capture date; the message names the file and the problem.
        TransientError: the server holding it did not answer.
    """
    path = checked_path(href, options)
    try:
        with options.env(), open_raster(path, options) as src:
            if src.crs is None:
                raise SourceError(
                    f"raster {href}: no coordinate reference system (CRS), so it cannot be placed "
                    "on the map; georeference it first (e.g. gdal_translate -a_srs / -a_ullr)"
                )
            bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
            resolution = _ground_resolution_m(src)
            try:
                check_resolution(f"raster {href}", resolution, options.max_resolution_m)
            except ValueError as error:
                raise SourceError(str(error)) from None
            tags = {**src.tags(), **src.tags(ns="IMAGERY")}
            date = normalize_date(imagery_date) if imagery_date else ""
            date = date or date_from_tags(tags)
            if not date:
                raise SourceError(
                    f"raster {href}: no capture date: no ACQUISITIONDATETIME or TIFFTAG_DATETIME "
                    "tag; pass --imagery-date YYYY-MM-DD"
                )
            rule = _rule(href, src)
            nodata = src.nodata
            crs = src.crs.to_string()
    except RasterioIOError as error:
        raise _open_error(href, error) from None
    return RasterInfo(href, path, crs, tuple(bounds), resolution, date, rule, nodata)


def _ground_resolution_m(src: Any) -> float:
    """Metres on the ground of one pixel at the raster's centre (the coarser axis)."""
    col, row = src.width / 2, src.height / 2
    xs, ys = zip(
        *(src.xy(r, c, offset="ul") for c, r in ((col, row), (col + 1, row), (col, row + 1))),
        strict=True,
    )
    lons, lats = transform(src.crs, "EPSG:4326", list(xs), list(ys))
    _, _, dx = _GEOD.inv(lons[0], lats[0], lons[1], lats[1])
    _, _, dy = _GEOD.inv(lons[0], lats[0], lons[2], lats[2])
    return float(max(abs(dx), abs(dy)))


def _rule(href: str, src: Any) -> BandRule:
    interp = [c.name for c in src.colorinterp]
    dtype = src.dtypes[0]
    nbits_text = src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    nbits = int(nbits_text) if nbits_text and nbits_text.isdigit() else None
    p98 = maximum = None
    try:
        bands = rgb_bands(f"raster {href}", interp)
    except ValueError as error:
        raise SourceError(str(error)) from None
    if np.dtype(dtype).itemsize != 1 and nbits is None:
        # One read of the smallest overview (at most 1024 px) for the scaling figures.
        with Reader(None, dataset=src) as reader:
            stats = reader.statistics(indexes=bands, max_size=1024, percentiles=[98])
        p98 = max(s.percentile_98 for s in stats.values())
        maximum = max(s.max for s in stats.values())
    try:
        return band_rule(f"raster {href}", dtype, interp, nbits, p98, maximum)
    except ValueError as error:
        raise SourceError(str(error)) from None


def read_tile(
    rasters: Sequence[RasterInfo], tile: Tile, fetch_zoom: int, options: RasterOptions
) -> ScanImage:
    """One scan tile from `rasters` (same date, best first): each read at the tile's bounds and
    `256 << (fetch_zoom - zoom)` px, nodata filled from the next (blocking; call from a thread).

    Raises:
        SourceError / TransientError: a raster cannot be read (names it).
    """
    size = PROVIDER_TILE_PX << (fetch_zoom - tile.z)
    date = rasters[0].imagery_date if rasters else ""
    if not rasters:
        return blank(tile, fetch_zoom)

    def one(info: RasterInfo, x: int, y: int, z: int, **kwargs: Any) -> ImageData:
        with open_raster(info.path, options) as src, Reader(None, dataset=src) as reader:
            data = reader.tile(x, y, z, tilesize=size, indexes=info.rule.bands, **kwargs)
        if info.rule.scale_max is not None:
            data.rescale(in_range=((0, info.rule.scale_max),))
        image: ImageData = data
        return image

    try:
        with options.env():
            image, used = mosaic_reader(list(rasters), one, tile.x, tile.y, tile.z, threads=1)
    except (EmptyMosaicError, TileOutsideBounds):
        return blank(tile, fetch_zoom, date, "outside every raster")
    except RasterioIOError as error:
        where = ", ".join(r.href for r in rasters)
        if any(r.path.startswith(("http://", "https://", "/vsis3/")) for r in rasters):
            # Each was opened (and checked) already: a read that fails now is the server's or the
            # network's doing (a checked range request's own failure is raised by open_raster).
            raise TransientError(
                f"raster {where}: reading failed, to be retried ({error})"
            ) from None
        raise _open_error(where, error) from None
    rgb = to_rgb8(image.data, BandRule((1, 2, 3), None, "already 8-bit"))
    valid = np.asarray(image.mask) > 0
    rgb[~valid] = 0
    return ScanImage(rgb, date, float(valid.mean()), " + ".join(u.href for u in used))


def blank(tile: Tile, fetch_zoom: int, date: str = "", source: str = "") -> ScanImage:
    """A scan tile no raster covers: black, coverage 0 (the tiler skips it, saying so)."""
    size = PROVIDER_TILE_PX << (fetch_zoom - tile.z)
    return ScanImage(np.zeros((size, size, 3), dtype=np.uint8), date, 0.0, source)
