"""The stac provider: a static catalogue (pystac) and an item-search API over real HTTP, whose
items' visual assets are COGs made from the shared tiles, served with range requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from amberscan.common.settings import Settings
from amberscan.errors import TransientError
from amberscan.geo.tiles import Tile
from amberscan.imagery.providers import RasterOptions, SourceError, StacProvider
from amberscan.imagery.providers.stac import REWALK_S
from amberscan.tiler import demo
from tests.imagery.rasters import Catalogue, Served, file_server, stac_api
from tests.sources import local_sources
from tests.streams import free_port, served

OPTIONS = RasterOptions.from_settings(local_sources(Settings()))
TILES = [d.tile for d in demo.demo_layout()]


@pytest.fixture
async def catalogue(tmp_path: Path, shared_data: Path) -> AsyncIterator[Catalogue]:
    (tmp_path / "cogs").mkdir()
    async with served(file_server(tmp_path, Served())) as base:
        yield Catalogue(tmp_path, base, demo.demo_images(shared_data / "tiles"))


async def test_static_catalogue_gives_the_demo_pixels(catalogue: Catalogue) -> None:
    url = catalogue.write([catalogue.item(t, "2018-05-01") for t in TILES])
    provider = StacProvider(url, OPTIONS, collection="ortho")
    for tile in TILES:
        read = await provider.scan_image(tile, 18)
        assert np.array_equal(read.image, catalogue.images[tile]), tile
        assert read.imagery_date == "2018-05-01" and read.coverage == 1.0
        assert f"STAC item {tile.quadkey}-2018-05-01" == read.source
    footprint = await provider.footprint()
    assert footprint.area == pytest.approx(
        sum((b[2] - b[0]) * (b[3] - b[1]) for b in (t.bounds() for t in TILES)), rel=1e-6
    )
    assert await provider.vintages(footprint) == ["2018-05-01"]
    outside = Tile(TILES[0].x - 1, TILES[0].y, 16)
    assert (await provider.scan_image(outside, 18)).coverage == 0.0


async def test_newest_item_per_tile_or_one_vintage(catalogue: Catalogue) -> None:
    tile = TILES[0]
    items = [catalogue.item(t, "2018-05-01") for t in TILES]
    items.append(catalogue.item(tile, "2020-07-01", source=TILES[1]))
    provider = StacProvider(catalogue.write(items), OPTIONS)
    newest = await provider.scan_image(tile, 18)
    assert newest.imagery_date == "2020-07-01"
    assert np.array_equal(newest.image, catalogue.images[TILES[1]])
    older = await provider.scan_image(tile, 18, vintage="2018-05-01")
    assert np.array_equal(older.image, catalogue.images[tile])
    other = await provider.scan_image(TILES[2], 18)  # no newer item there: its own date
    assert other.imagery_date == "2018-05-01"
    assert await provider.vintages(await provider.footprint()) == ["2018-05-01", "2020-07-01"]


async def test_discover_reports_only_items_newer_than_the_cursor(catalogue: Catalogue) -> None:
    items = [catalogue.item(t, "2018-05-01") for t in TILES]
    url = catalogue.write(items)
    first = await StacProvider(url, OPTIONS).discover(TILES, "")
    assert dict(first.dates) == dict.fromkeys(TILES, "2018-05-01")
    assert first.cursor.startswith("2018-05-01T10:00:00")
    catalogue.write(
        [*items, catalogue.item(TILES[1], "2019-06-01"), catalogue.item(TILES[5], "2019-06-01")]
    )
    later = await StacProvider(url, OPTIONS).discover(TILES, first.cursor)
    # Items at the cursor come back (>=), but their tiles' dates are those already seen; the
    # watch's record of what it enqueued drops them. Only the two new items bring new dates.
    new = {t: d for t, d in later.dates.items() if d != "2018-05-01"}
    assert new == {TILES[1]: "2019-06-01", TILES[5]: "2019-06-01"}
    assert later.cursor.startswith("2019-06-01")
    # A provider kept across the change (the tiler's) walks the catalogue again for a date it
    # is asked for and does not know.
    kept = StacProvider(url, OPTIONS)
    catalogue.write(items)
    await kept.scan_image(TILES[1], 18)
    catalogue.write([*items, catalogue.item(TILES[1], "2019-06-01")])
    await asyncio.sleep(REWALK_S + 0.1)  # on purpose: it walks again no sooner than REWALK_S
    read = await kept.scan_image(TILES[1], 18, vintage="2019-06-01")
    assert read.imagery_date == "2019-06-01" and read.coverage == 1.0


async def test_item_search_api(catalogue: Catalogue) -> None:
    items = [catalogue.item(t, "2018-05-01") for t in TILES]
    items.append(catalogue.item(TILES[3], "2021-04-01", source=TILES[0]))
    async with served(stac_api(items)) as api:
        provider = StacProvider(f"{api}/", OPTIONS, collection="ortho")
        read = await provider.scan_image(TILES[3], 18)
        assert read.imagery_date == "2021-04-01"
        assert np.array_equal(read.image, catalogue.images[TILES[0]])
        assert await provider.vintages(await provider.footprint()) == ["2018-05-01", "2021-04-01"]
        # The datetime range is the API's to apply: before 2020 only the older item is there.
        old = await provider.entries(TILES[3].bounds(), "", "2019-12-31")
        assert {e.date for e in old} == {"2018-05-01"}
        other = StacProvider(f"{api}/", OPTIONS, collection="elsewhere")
        with pytest.raises(SourceError, match="no item in collection 'elsewhere'"):
            await other.footprint()


async def test_unreachable_stac_api_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(TransientError, match=f"STAC catalogue {url} is unreachable"):
        await StacProvider(url, OPTIONS).footprint()


async def test_not_a_catalogue_and_missing_asset(catalogue: Catalogue) -> None:
    (catalogue.root / "junk.json").write_text('{"hello": "world"}')
    with pytest.raises(SourceError, match="junk.json: not a usable STAC catalogue"):
        await StacProvider(f"{catalogue.base}/junk.json", OPTIONS).footprint()
    item = catalogue.item(TILES[0], "2018-05-01")
    item.assets.clear()  # type: ignore[attr-defined]
    item.add_asset("thumbnail", __import__("pystac").Asset(href="x.png"))  # type: ignore[attr-defined]
    url = catalogue.write([item])
    with pytest.raises(SourceError, match="no visual/RGB asset \\(assets: thumbnail\\)"):
        await StacProvider(url, OPTIONS).footprint()
