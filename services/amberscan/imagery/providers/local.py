"""Tiles from a local folder laid out as z/x/y (own imagery already cut into tiles)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from amberscan.errors import TransientError
from amberscan.geo.tiles import Tile
from amberscan.imagery.dates import normalize_date
from amberscan.imagery.providers.base import FetchedTile, TileNotFound, TileProvider

if TYPE_CHECKING:
    from amberscan.imagery.providers.guard import SourceGuard


class LocalProvider(TileProvider):
    """Tiles from a folder laid out as `z/x/y.png` (or .jpg/.jpeg), e.g. a drone orthophoto.

    Each file is read only when its real path (symlinks resolved) is under the roots `guard`
    allows (#26 defect 8).
    """

    EXTENSIONS = (".png", ".jpg", ".jpeg")

    def __init__(
        self,
        directory: str | Path,
        *,
        imagery_date: str = "",
        name: str = "local",
        guard: SourceGuard,
    ):
        self.directory = Path(str(directory).removeprefix("file://"))
        self.guard = guard
        self.fixed_date = normalize_date(imagery_date)
        self.name = name

    async def fetch(self, tile: Tile) -> FetchedTile:
        def read() -> FetchedTile:
            self.guard.check_path(str(self.directory))  # the folder a request names
            stem = self.directory / str(tile.z) / str(tile.x) / str(tile.y)
            for ext in self.EXTENSIONS:
                path = stem.with_suffix(ext)
                if path.is_file():
                    self.guard.check_path(str(path))
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
