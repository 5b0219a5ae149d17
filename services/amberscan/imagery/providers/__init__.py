"""Imagery providers: where a scan tile's pixels come from.

Tile servers — `xyz` (any z/x/y template), `bing` (Bing Maps), `local` (a z/x/y folder), `demo`
(the demo tile server) and `wmts` (OGC WMTS) — and rasters read with rasterio/rio-tiler —
`geotiff` (GeoTIFF/COG files, URLs, `s3://` keys) and `stac` (STAC API or static catalogue).
`provider_for` makes the one a scan names, configured from the settings and the request, each
holding the settings' source policy (`guard.SourceGuard`, #26 defect 8): every URL, redirect
hop, address, local path and bucket it opens is checked there.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from amberscan.common.settings import ImagerySettings, S3Config
from amberscan.errors import PoisonMessage, TransientError
from amberscan.imagery.providers.base import (
    DATE_HEADER,
    Catalogue,
    Discovery,
    FetchedTile,
    Provider,
    ProviderError,
    ScanImage,
    SourceError,
    SourceRefused,
    SourceSpec,
    TileNotFound,
    TileProvider,
    fetch_scan_tile,
)
from amberscan.imagery.providers.bing import BingProvider
from amberscan.imagery.providers.geotiff import GeotiffProvider
from amberscan.imagery.providers.guard import SourceGuard
from amberscan.imagery.providers.http import Fetcher, RateLimiter, open_session, redact
from amberscan.imagery.providers.local import LocalProvider
from amberscan.imagery.providers.raster import RasterOptions
from amberscan.imagery.providers.stac import StacProvider
from amberscan.imagery.providers.wmts import WmtsProvider
from amberscan.imagery.providers.xyz import XyzProvider

__all__ = [
    "DATE_HEADER",
    "PROVIDERS",
    "BingProvider",
    "Catalogue",
    "Discovery",
    "FetchedTile",
    "Fetcher",
    "GeotiffProvider",
    "LocalProvider",
    "Provider",
    "ProviderError",
    "RateLimiter",
    "RasterOptions",
    "ScanImage",
    "SourceError",
    "SourceGuard",
    "SourceRefused",
    "SourceSpec",
    "StacProvider",
    "TileNotFound",
    "TileProvider",
    "WmtsProvider",
    "XyzProvider",
    "check_sources",
    "fetch_scan_tile",
    "open_session",
    "provider_for",
    "redact",
]

PROVIDERS = ("xyz", "bing", "local", "demo", "geotiff", "stac", "wmts")


def provider_for(
    spec: SourceSpec | str, settings: ImagerySettings, session: aiohttp.ClientSession | None = None
) -> Provider:
    """The provider a scan names, configured from `settings` and the request's sources.

    `session`, when given, must come from `open_session` with the settings' guard.

    Raises:
        PoisonMessage: an unknown provider, or one neither the request nor the settings configure.
    """
    if isinstance(spec, str):
        spec = SourceSpec(spec)
    name = spec.provider
    guard = SourceGuard.from_settings(settings)

    def fetcher() -> Fetcher:
        return Fetcher(
            session,
            concurrency=settings.imagery.fetch_concurrency,
            rate_per_s=settings.imagery.fetch_rate_per_s,
            timeout_s=settings.imagery.fetch_timeout_s,
            retries=settings.retry.max_retries,
            backoff_s=settings.retry.backoff_s,
            guard=guard,
        )

    if name == "xyz":
        url = spec.sources[0] if spec.sources else settings.imagery.xyz_url
        if not url:
            raise PoisonMessage("provider 'xyz' is not configured: set AMBERSCAN_XYZ_URL")
        date = spec.imagery_date or settings.imagery.xyz_imagery_date
        return XyzProvider(url, fetcher(), name="xyz", imagery_date=date)
    if name == "demo":
        return XyzProvider(settings.imagery.demo_tiles_url, fetcher(), name="demo")
    if name == "bing":
        if not settings.imagery.bing_api_key:
            raise PoisonMessage("provider 'bing' is not configured: set AMBERSCAN_BING_API_KEY")
        return BingProvider(settings.imagery.bing_api_key, fetcher())
    if name == "local":
        directory = spec.sources[0] if spec.sources else settings.imagery.local_tiles_dir
        if not directory:
            raise PoisonMessage("provider 'local' is not configured: set AMBERSCAN_LOCAL_TILES_DIR")
        date = spec.imagery_date or settings.imagery.local_imagery_date
        return LocalProvider(directory, imagery_date=date, guard=guard)
    if name == "geotiff":
        return GeotiffProvider(
            spec.sources,
            RasterOptions.from_settings(settings),
            imagery_date=spec.imagery_date,
            list_s3=_s3_lister(settings.s3),
        )
    if name == "stac":
        return StacProvider(
            spec.sources[0] if spec.sources else settings.imagery.stac_url,
            RasterOptions.from_settings(settings),
            collection=spec.collection or settings.imagery.stac_collection,
            timeout_s=settings.imagery.fetch_timeout_s,
        )
    if name == "wmts":
        layers = spec.layers or (
            (settings.imagery.wmts_layer,) if settings.imagery.wmts_layer else ()
        )
        return WmtsProvider(
            spec.sources[0] if spec.sources else settings.imagery.wmts_url,
            layers,
            fetcher(),
            imagery_date=spec.imagery_date,
        )
    raise PoisonMessage(f"unknown imagery provider {name!r} (known: {', '.join(PROVIDERS)})")


def _s3_lister(s3: S3Config) -> Callable[[str, str], list[str]]:
    def list_keys(bucket: str, prefix: str) -> list[str]:
        from amberscan.common.blobstore import BlobStore

        client = BlobStore(s3).client
        return [o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)]

    return list_keys


def check_sources(spec: SourceSpec, settings: ImagerySettings) -> None:
    """Refuse up front (the CLI, before anything is submitted) a source of `spec` the policy
    refuses: each URL by its scheme, host and the addresses it resolves to here, each local
    path or glob by its roots, each `s3://` key by its bucket. What cannot be resolved here is
    left to the readers, which check again where they open it.

    Raises:
        SourceRefused: the first source refused, with the rule.
    """
    guard = SourceGuard.from_settings(settings)
    for source in spec.sources:
        probe = source
        if spec.provider == "xyz":  # a template: its placeholders are not wildcards
            for name in ("{z}", "{x}", "{y}", "{q}"):
                probe = probe.replace(name, "0")
        try:
            guard.check(probe)
        except SourceRefused as refused:
            raise guard.refused(source, refused.reason) from None
        except TransientError:
            continue  # not resolvable from here: the reader resolves and checks it
