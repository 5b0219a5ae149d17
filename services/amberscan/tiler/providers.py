"""Imagery providers: where provider tiles come from (XYZ servers, Bing Maps, a local folder).

HTTP providers share one aiohttp `ClientSession` and a `Fetcher` that limits concurrency and
request rate, times out, retries 5xx/429/connection errors with exponential backoff (then raises
`TransientError`, so the stage retries later), turns 404 and undecodable images into a
`PoisonMessage` naming the URL, and revalidates repeated requests with `If-None-Match`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import numpy as np
from numpy.typing import NDArray

from amberscan.common.errors import PoisonMessage, TransientError
from amberscan.geo.tiles import Tile
from amberscan.tiler.core import latest_date, normalize_date, plan_children, stitch
from amberscan.vision.imageio import decode_image

log = logging.getLogger(__name__)

DATE_HEADER = "X-Imagery-Date"
DEFAULT_DEMO_TILES_URL = "http://127.0.0.1:18080/tiles/{z}/{x}/{y}.png"
BING_REST_URL = "https://dev.virtualearth.net/REST/v1"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_SECRET_PARAMS = re.compile(r"([?&](?:key|api_key|apikey|access_token|token)=)[^&]*", re.I)


class TileNotFound(PoisonMessage):
    """The provider has no such tile (404, or an explicit "no imagery here" answer)."""


class ProviderError(PoisonMessage):
    """The provider refused the request for good (a 4xx other than 404/429, bad metadata)."""


def redact(url: str) -> str:
    """`url` with API keys hidden, for error messages and logs."""
    return _SECRET_PARAMS.sub(r"\1***", url)


@dataclass(frozen=True)
class FetchedTile:
    """The encoded bytes of one provider tile, where they came from and their capture date."""

    data: bytes
    source: str
    imagery_date: str = ""


@dataclass(frozen=True)
class ScanImage:
    """A stitched scan tile image and its capture date ("" when the provider does not say)."""

    image: NDArray[np.uint8]
    imagery_date: str


class Provider(Protocol):
    name: str

    async def fetch(self, tile: Tile) -> FetchedTile:
        """The bytes of one provider tile."""
        ...

    async def imagery_date(self, scan_tile: Tile, fetch_zoom: int, child_dates: list[str]) -> str:
        """The capture date of a scan tile's imagery."""
        ...

    async def close(self) -> None: ...


class RateLimiter:
    """At most `rate` acquisitions per second, evenly spaced (0 disables the limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass
class _Cached:
    etag: str
    body: bytes
    headers: dict[str, str]


class Fetcher:
    """GETs over one shared session with a concurrency limit, rate limit, retries and ETags."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        concurrency: int = 8,
        rate_per_s: float = 0.0,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        etag_cache_size: int = 512,
    ) -> None:
        self._session = session
        self._own_session = session is None
        self.semaphore = asyncio.Semaphore(concurrency)
        self.limiter = RateLimiter(rate_per_s)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self._etags: OrderedDict[str, _Cached] = OrderedDict()
        self._etag_cache_size = etag_cache_size
        self.requests = 0  # HTTP requests sent (tests and metrics)
        self.revalidated = 0  # answered 304 Not Modified from the ETag cache

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "amberscan-tiler"})
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, url: str) -> tuple[bytes, Mapping[str, str]]:
        """The body and headers of a 200 answer to GET `url`.

        Raises:
            TileNotFound: 404.
            ProviderError: another 4xx (except 429).
            TransientError: 5xx, 429, timeouts or connection errors after every retry.
        """
        shown = redact(url)
        backoff = self.backoff_s
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(backoff)
                backoff *= 2
            cached = self._etags.get(url)
            headers = {"If-None-Match": cached.etag} if cached else {}
            await self.limiter.acquire()
            try:
                async with self.semaphore:
                    self.requests += 1
                    async with self.session.get(
                        url, headers=headers, timeout=self.timeout
                    ) as response:
                        status = response.status
                        if status == 304 and cached is not None:
                            self.revalidated += 1
                            self._etags.move_to_end(url)
                            return cached.body, cached.headers
                        if status == 200:
                            body = await response.read()
                            answer = dict(response.headers)
                            self._remember(url, response.headers.get("ETag", ""), body, answer)
                            return body, answer
                        reason = response.reason or ""
            except (aiohttp.ClientError, TimeoutError) as error:
                last = f"{type(error).__name__}: {error}".rstrip(": ")
                log.info("fetch failed, will retry", extra={"url": shown, "error": last})
                continue
            if status == 404:
                raise TileNotFound(f"{shown}: 404 Not Found")
            if status in _RETRY_STATUS:
                last = f"HTTP {status} {reason}"
                continue
            raise ProviderError(f"{shown}: HTTP {status} {reason}")
        raise TransientError(f"{shown}: gave up after {self.retries + 1} attempts ({last})")

    async def get_json(self, url: str) -> Any:
        body, _ = await self.get(url)
        try:
            return json.loads(body)
        except ValueError as error:
            raise ProviderError(f"{redact(url)}: not JSON ({error})") from None

    def _remember(self, url: str, etag: str, body: bytes, headers: dict[str, str]) -> None:
        if not etag or self._etag_cache_size <= 0:
            return
        self._etags[url] = _Cached(etag, body, headers)
        self._etags.move_to_end(url)
        while len(self._etags) > self._etag_cache_size:
            self._etags.popitem(last=False)


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return ""


class XyzProvider:
    """A z/x/y tile server: `url_template` has {z}, {x}, {y} (or {q}, the quadkey).

    The capture date is `imagery_date` when given, else the `date_header` of the tile answers
    (the latest over a scan tile's children), else "".
    """

    def __init__(
        self,
        url_template: str,
        fetcher: Fetcher | None = None,
        *,
        name: str = "xyz",
        imagery_date: str = "",
        date_header: str = DATE_HEADER,
    ) -> None:
        if not ("{q}" in url_template or all(f"{{{p}}}" in url_template for p in "zxy")):
            raise ValueError(
                f"XYZ URL template {url_template!r} needs {{z}}, {{x}}, {{y}} or {{q}}"
            )
        self.url_template = url_template
        self.fetcher = fetcher or Fetcher()
        self.name = name
        self.fixed_date = normalize_date(imagery_date)
        self.date_header = date_header

    def url(self, tile: Tile) -> str:
        return (
            self.url_template.replace("{z}", str(tile.z))
            .replace("{x}", str(tile.x))
            .replace("{y}", str(tile.y))
            .replace("{q}", tile.quadkey)
        )

    async def fetch(self, tile: Tile) -> FetchedTile:
        url = self.url(tile)
        body, headers = await self.fetcher.get(url)
        date = self.fixed_date or normalize_date(_header(headers, self.date_header))
        return FetchedTile(body, f"tile {tile} ({redact(url)})", date)

    async def imagery_date(self, scan_tile: Tile, fetch_zoom: int, child_dates: list[str]) -> str:
        return self.fixed_date or latest_date(child_dates)

    async def close(self) -> None:
        await self.fetcher.close()


class BingProvider:
    """Bing Maps aerial imagery through its REST imagery metadata API.

    The imagery metadata (`Imagery/Metadata/Aerial?include=ImageryProviders`) gives the tile URL
    template ({quadkey}, {subdomain}) once; the capture date of a scan tile is the `vintageEnd`
    (else `vintageStart`) of the per-location metadata at its centre and the fetch zoom. Tiles
    Bing has no imagery for come back with `X-VE-Tile-Info: no-tile` and are refused.
    Note: Microsoft is retiring this API (Basic keys already, Enterprise by mid-2028).
    """

    def __init__(
        self,
        api_key: str,
        fetcher: Fetcher | None = None,
        *,
        rest_url: str = BING_REST_URL,
        name: str = "bing",
    ) -> None:
        if not api_key:
            raise ValueError("the Bing provider needs an API key (AMBERSCAN_BING_API_KEY)")
        self.api_key = api_key
        self.fetcher = fetcher or Fetcher()
        self.rest_url = rest_url.rstrip("/")
        self.name = name
        self._template: tuple[str, list[str]] | None = None
        self._template_lock = asyncio.Lock()
        self._dates: dict[tuple[Tile, int], str] = {}

    async def _url_template(self) -> tuple[str, list[str]]:
        async with self._template_lock:
            if self._template is None:
                query = urlencode(
                    {"output": "json", "include": "ImageryProviders", "uriScheme": "https"}
                )
                url = f"{self.rest_url}/Imagery/Metadata/Aerial?{query}&key={self.api_key}"
                resource = _bing_resource(await self.fetcher.get_json(url), url)
                template = resource.get("imageUrl")
                if not isinstance(template, str) or "{quadkey}" not in template:
                    raise ProviderError(f"{redact(url)}: no imageUrl with {{quadkey}} in metadata")
                self._template = (template, list(resource.get("imageUrlSubdomains") or [""]))
            return self._template

    async def url(self, tile: Tile) -> str:
        template, subdomains = await self._url_template()
        subdomain = subdomains[(tile.x + tile.y) % len(subdomains)]  # spread over hosts
        return template.replace("{quadkey}", tile.quadkey).replace("{subdomain}", subdomain)

    async def fetch(self, tile: Tile) -> FetchedTile:
        url = await self.url(tile)
        body, headers = await self.fetcher.get(url)
        if _header(headers, "X-VE-Tile-Info").lower() == "no-tile":
            raise TileNotFound(f"tile {tile} ({redact(url)}): Bing has no imagery there")
        return FetchedTile(body, f"tile {tile} ({redact(url)})")

    async def imagery_date(self, scan_tile: Tile, fetch_zoom: int, child_dates: list[str]) -> str:
        cached = self._dates.get((scan_tile, fetch_zoom))
        if cached is not None:
            return cached
        lon, lat = scan_tile.center()
        url = (
            f"{self.rest_url}/Imagery/Metadata/Aerial/{lat:.6f},{lon:.6f}"
            f"?zl={fetch_zoom}&output=json&key={self.api_key}"
        )
        resource = _bing_resource(await self.fetcher.get_json(url), url)
        date = normalize_date(str(resource.get("vintageEnd") or resource.get("vintageStart") or ""))
        self._dates[(scan_tile, fetch_zoom)] = date
        return date

    async def close(self) -> None:
        await self.fetcher.close()


def _bing_resource(document: Any, url: str) -> dict[str, Any]:
    try:
        resource = document["resourceSets"][0]["resources"][0]
    except (KeyError, IndexError, TypeError):
        raise ProviderError(
            f"{redact(url)}: metadata without resourceSets[0].resources[0]"
        ) from None
    if not isinstance(resource, dict):
        raise ProviderError(f"{redact(url)}: metadata resource is not an object")
    return resource


class LocalProvider:
    """Tiles from a folder laid out as `z/x/y.png` (or .jpg/.jpeg), e.g. a drone orthophoto."""

    EXTENSIONS = (".png", ".jpg", ".jpeg")

    def __init__(self, directory: str | Path, *, imagery_date: str = "", name: str = "local"):
        self.directory = Path(directory)
        self.fixed_date = normalize_date(imagery_date)
        self.name = name

    async def fetch(self, tile: Tile) -> FetchedTile:
        def read() -> FetchedTile:
            stem = self.directory / str(tile.z) / str(tile.x) / str(tile.y)
            for ext in self.EXTENSIONS:
                path = stem.with_suffix(ext)
                if path.is_file():
                    return FetchedTile(path.read_bytes(), f"tile {tile} ({path})", self.fixed_date)
            raise TileNotFound(f"tile {tile}: no {stem}.png or .jpg")

        try:
            return await asyncio.to_thread(read)
        except OSError as error:
            raise TransientError(f"tile {tile}: reading {self.directory}: {error}") from error

    async def imagery_date(self, scan_tile: Tile, fetch_zoom: int, child_dates: list[str]) -> str:
        return self.fixed_date

    async def close(self) -> None:
        return None


async def fetch_scan_tile(provider: Provider, scan_tile: Tile, fetch_zoom: int) -> ScanImage:
    """Fetch, decode and stitch the provider tiles of one scan tile.

    Raises:
        PoisonMessage: a child is missing (404) or not a usable image; the message names it.
        TransientError: the provider did not answer after its retries.
    """
    children = plan_children(scan_tile, fetch_zoom)
    fetched = await asyncio.gather(*(provider.fetch(c.tile) for c in children))

    def decode() -> NDArray[np.uint8]:
        images = [decode_image(f.data, f.source) for f in fetched]
        return stitch(children, images)

    image = await asyncio.to_thread(decode)
    date = await provider.imagery_date(scan_tile, fetch_zoom, [f.imagery_date for f in fetched])
    return ScanImage(image, date)


def provider_for(
    name: str, settings: object, session: aiohttp.ClientSession | None = None
) -> Provider:
    """The provider called `name` ("xyz", "bing", "local", "demo"), configured from settings.

    Raises:
        PoisonMessage: an unknown provider, or one the settings do not configure.
    """

    def fetcher() -> Fetcher:
        return Fetcher(
            session,
            concurrency=int(getattr(settings, "fetch_concurrency", 8)),
            rate_per_s=float(getattr(settings, "fetch_rate_per_s", 0.0)),
            timeout_s=float(getattr(settings, "fetch_timeout_s", 30.0)),
            retries=int(getattr(settings, "max_retries", 4)),
            backoff_s=float(getattr(settings, "retry_backoff_s", 0.5)),
        )

    if name == "xyz":
        url = str(getattr(settings, "xyz_url", "") or "")
        if not url:
            raise PoisonMessage("provider 'xyz' is not configured: set AMBERSCAN_XYZ_URL")
        date = str(getattr(settings, "xyz_imagery_date", "") or "")
        return XyzProvider(url, fetcher(), name="xyz", imagery_date=date)
    if name == "demo":
        url = str(getattr(settings, "demo_tiles_url", "") or DEFAULT_DEMO_TILES_URL)
        return XyzProvider(url, fetcher(), name="demo")
    if name == "bing":
        key = str(getattr(settings, "bing_api_key", "") or "")
        if not key:
            raise PoisonMessage("provider 'bing' is not configured: set AMBERSCAN_BING_API_KEY")
        return BingProvider(key, fetcher())
    if name == "local":
        directory = getattr(settings, "local_tiles_dir", None)
        if not directory:
            raise PoisonMessage("provider 'local' is not configured: set AMBERSCAN_LOCAL_TILES_DIR")
        date = str(getattr(settings, "local_imagery_date", "") or "")
        return LocalProvider(directory, imagery_date=date)
    raise PoisonMessage(f"unknown imagery provider {name!r} (known: xyz, bing, local, demo)")
