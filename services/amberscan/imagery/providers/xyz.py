"""A z/x/y tile server (XYZ template), as most web maps and orthophoto services publish."""

from __future__ import annotations

from amberscan.geo.tiles import Tile
from amberscan.imagery.dates import latest_date, normalize_date
from amberscan.imagery.providers.base import DATE_HEADER, FetchedTile, TileProvider, header
from amberscan.imagery.providers.http import Fetcher, redact


class XyzProvider(TileProvider):
    """A z/x/y tile server: `url_template` has {z}, {x}, {y} (or {q}, the quadkey).

    The capture date is `imagery_date` when given, else the `date_header` of the tile answers
    (the latest over a scan tile's children), else "".
    """

    def __init__(
        self,
        url_template: str,
        fetcher: Fetcher,
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
        self.fetcher = fetcher
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
        date = self.fixed_date or normalize_date(header(headers, self.date_header))
        return FetchedTile(body, f"tile {tile} ({redact(url)})", date)

    async def imagery_date(self, scan_tile: Tile, fetch_zoom: int, child_dates: list[str]) -> str:
        return self.fixed_date or latest_date(child_dates)

    async def close(self) -> None:
        await self.fetcher.close()
