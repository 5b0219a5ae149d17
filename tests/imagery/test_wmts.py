"""The wmts provider against a capabilities document and tiles served locally (OWSLib parses
the capabilities; the tiles are the demo tile server's pixels)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from amberscan.geo.tiles import Tile
from amberscan.imagery.providers import SourceError, WmtsProvider
from amberscan.imagery.providers.wmts import mercator_matrices
from amberscan.tiler import demo
from tests.imagery.rasters import WmtsServer, wmts_app
from tests.sources import local_fetcher
from tests.streams import served

TILES = [d.tile for d in demo.demo_layout()]


@pytest.fixture
async def wmts(shared_data: Path) -> AsyncIterator[tuple[str, WmtsServer]]:
    state = WmtsServer(times=["2014-06-01", "2019-05-01"])
    async with served(wmts_app(shared_data / "tiles", state)) as base:
        yield f"{base}/wmts/capabilities.xml", state


async def test_time_dimension_values_are_vintages(wmts, shared_data: Path) -> None:
    url, state = wmts
    images = demo.demo_images(shared_data / "tiles")
    provider = WmtsProvider(url, ("ortho",), local_fetcher())
    try:
        read = await provider.scan_image(TILES[0], 18)
        assert np.array_equal(read.image, images[TILES[0]])
        assert read.imagery_date == "2019-05-01" and "time 2019-05-01" in read.source
        assert {s[1] for s in state.sent} == {"2019-05-01"} and len(state.sent) == 16
        older = await provider.scan_image(TILES[1], 18, vintage="2014-06-01")
        assert older.imagery_date == "2014-06-01" and np.array_equal(older.image, images[TILES[1]])
        assert await provider.vintages(await provider.footprint()) == ["2014-06-01", "2019-05-01"]
        # Children are asked by TileMatrix 18, TileRow = y, TileCol = x.
        assert (18, TILES[0].y * 4, TILES[0].x * 4) in {s[2:] for s in state.sent}
        with pytest.raises(SourceError, match="no release dated 2001-01-01"):
            await provider.scan_image(TILES[0], 18, vintage="2001-01-01")
    finally:
        await provider.close()


async def test_new_time_value_is_discovered(wmts) -> None:
    url, state = wmts
    provider = WmtsProvider(url, ("ortho",), local_fetcher())
    try:
        first = await provider.discover(TILES[:3], "")
        assert dict(first.dates) == dict.fromkeys(TILES[:3], "2019-05-01")
        assert first.cursor == "2019-05-01"
        assert not (await provider.discover(TILES[:3], first.cursor)).dates
        state.times.append("2021-08-15")
        later = await provider.discover(TILES[:3], first.cursor)
        assert dict(later.dates) == dict.fromkeys(TILES[:3], "2021-08-15")
        # A request for the new release finds it even though the capabilities were read before.
        kept = WmtsProvider(url, ("ortho",), local_fetcher())
        state.times.append("2022-09-01")
        assert (await kept.vintage("2022-09-01")).time == "2022-09-01"
        await kept.close()
    finally:
        await provider.close()


async def test_one_layer_per_release(wmts) -> None:
    url, _ = wmts
    provider = WmtsProvider(url, ("ortho", "ortho_2016-06-01"), local_fetcher())
    try:
        dates = await provider.vintages(await provider.footprint())
        assert dates == ["2014-06-01", "2016-06-01", "2019-05-01"]
        read = await provider.scan_image(TILES[2], 18, vintage="2016-06-01")
        assert read.imagery_date == "2016-06-01" and "ortho_2016-06-01" in read.source
    finally:
        await provider.close()


async def test_layer_without_web_mercator_matrix_set_is_refused(wmts) -> None:
    url, _ = wmts
    provider = WmtsProvider(url, ("ortho-1992",), local_fetcher())
    try:
        with pytest.raises(SourceError, match="ortho-1992.*no Web Mercator TileMatrixSet.*PL-1992"):
            await provider.scan_image(TILES[0], 18)
    finally:
        await provider.close()


async def test_unknown_layer_and_ambiguous_service(wmts) -> None:
    url, _ = wmts
    for layers, message in (
        (("nope",), "no layer nope"),
        ((), "3 layers, name one with --layer"),
    ):
        provider = WmtsProvider(url, layers, local_fetcher())
        with pytest.raises(SourceError, match=message):
            await provider.scan_image(TILES[0], 18)
        await provider.close()


def test_mercator_matrices_need_the_standard_grid() -> None:
    class Matrix:
        def __init__(self, scale: float, left: float = -20037508.3427892, width: int = 256):
            self.scaledenominator = scale
            self.topleftcorner = (left, 20037508.3427892)
            self.tilewidth = self.tileheight = width

    class Set:
        def __init__(self, crs: str, matrices: dict[str, Matrix]):
            self.crs, self.identifier, self.tilematrix = crs, "x", matrices

    good = {f"EPSG:3857:{z}": Matrix(559082264.0287178 / (1 << z)) for z in range(3)}
    assert mercator_matrices(Set("urn:ogc:def:crs:EPSG::3857", good)) == {
        0: "EPSG:3857:0",
        1: "EPSG:3857:1",
        2: "EPSG:3857:2",
    }
    assert mercator_matrices(Set("EPSG:2180", good)) == {}
    shifted = {"0": Matrix(559082264.0287178, left=0.0)}
    assert mercator_matrices(Set("EPSG:3857", shifted)) == {}
    big = {"0": Matrix(559082264.0287178, width=512)}
    assert mercator_matrices(Set("EPSG:3857", big)) == {}
    assert Tile(0, 0, 0)  # the grid the matrices must match is the scan tiles'
