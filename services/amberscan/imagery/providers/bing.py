"""Bing Maps aerial imagery through its REST imagery metadata API.

Microsoft is retiring Bing Maps for Enterprise (free keys until 30 June 2025, enterprise keys
until 30 June 2028): this provider works only while its key does.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from amberscan.geo.tiles import Tile
from amberscan.imagery.dates import normalize_date
from amberscan.imagery.providers.base import (
    FetchedTile,
    ProviderError,
    TileNotFound,
    TileProvider,
    header,
)
from amberscan.imagery.providers.http import Fetcher, redact

BING_REST_URL = "https://dev.virtualearth.net/REST/v1"


class BingProvider(TileProvider):
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
        fetcher: Fetcher,
        *,
        rest_url: str = BING_REST_URL,
        name: str = "bing",
    ) -> None:
        if not api_key:
            raise ValueError("the Bing provider needs an API key (AMBERSCAN_BING_API_KEY)")
        self.api_key = api_key
        self.fetcher = fetcher
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
        if header(headers, "X-VE-Tile-Info").lower() == "no-tile":
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
