"""The demo mosaic (#10): a larger demo area cut from the real shared tiles, served over HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from amberscan.geo.tiles import Tile
from amberscan.imagery.providers import XyzProvider, fetch_scan_tile
from amberscan.tiler import demo, mosaic
from amberscan.tiler.core import plan_scan
from tests.sources import local_fetcher


@pytest.mark.parametrize("tiles", [1, 8, 24, 100, 200, 201])
def test_the_grid_holds_the_tiles_asked_for(tiles: int) -> None:
    columns, rows = mosaic.grid_for(tiles)
    assert columns * rows >= tiles and columns >= rows
    assert (columns - 1) * rows < tiles  # no spare column
    m = mosaic.Mosaic(columns, rows, Path("unused"))  # the layout needs no pixels
    request = m.scan_request("m-1")
    assert request.demo and request.provider == "demo"
    assert list(plan_scan(request, "xyz").tiles) == m.tiles()  # exactly the mosaic's tiles
    assert not set(m.tiles()) & set(demo.demo_tiles())  # apart from the 8-tile demo area


def test_shifted_tiles_are_all_different_crops_of_the_real_images(shared_data: Path) -> None:
    m = mosaic.Mosaic(6, 4, data_dir=shared_data / "tiles")
    digests = {hashlib.sha256(m.image(t).tobytes()).hexdigest() for t in m.tiles()}
    assert len(digests) == 24
    # The north-west quarter of a shifted tile is the south-east quarter of its canvas cell.
    first = m.origin
    name, symmetry = m.source(0, 0)
    cell = mosaic.DIHEDRAL[symmetry][1](demo.demo_images(shared_data / "tiles")[_tile_of(name)])
    assert np.array_equal(m.image(first)[:512, :512], cell[512:, 512:])
    assert m.describe(first).startswith(f"crops of {name}")


def test_whole_images_are_symmetries_of_the_real_ones(shared_data: Path) -> None:
    m = mosaic.Mosaic(4, 2, data_dir=shared_data / "tiles", shift=0.0)
    real = demo.demo_images(shared_data / "tiles")
    variants = {
        hashlib.sha256(np.ascontiguousarray(f(real[_tile_of(n)])).tobytes()).hexdigest()
        for n in demo.SOURCES
        for _, f in mosaic.DIHEDRAL
    }
    assert len(variants) == 32
    for tile in m.tiles():
        assert hashlib.sha256(m.image(tile).tobytes()).hexdigest() in variants
    with pytest.raises(ValueError, match="not in the 4x2 mosaic"):
        m.image(Tile(m.origin.x + 4, m.origin.y, 16))


def _tile_of(name: str) -> Tile:
    return next(d.tile for d in demo.demo_layout() if d.source == name)


@pytest.fixture
async def mosaic_server(shared_data: Path) -> AsyncIterator[tuple[mosaic.Mosaic, TestServer]]:
    m = mosaic.Mosaic(3, 2, data_dir=shared_data / "tiles")
    server = TestServer(mosaic.make_app(m), host="127.0.0.1", port=0)
    await server.start_server()
    yield m, server
    await server.close()


async def test_the_tiler_fetches_each_scan_tile_as_composed(mosaic_server) -> None:  # type: ignore[no-untyped-def]
    m, server = mosaic_server
    provider = XyzProvider(
        str(server.make_url("/tiles/")) + "{z}/{x}/{y}.png", local_fetcher(), name="demo"
    )
    try:
        for tile in m.tiles():
            fetched = await fetch_scan_tile(provider, tile, 18)
            assert np.array_equal(fetched.image, m.image(tile)), tile
            assert fetched.imagery_date == demo.DEMO_IMAGERY_DATE
    finally:
        await provider.close()
    assert m.png(18, m.origin.x * 4 - 1, m.origin.y * 4) is None  # just west of the mosaic
    assert m.png(17, m.origin.x * 2, m.origin.y * 2) is None
