"""The demo area and its tile server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from amberscan.geo.tiles import Tile
from amberscan.imagery.providers import XyzProvider, fetch_scan_tile
from amberscan.tiler import demo
from amberscan.tiler.core import plan_scan
from amberscan.vision.imageio import decode_image
from tests.sources import local_fetcher


def test_demo_request_covers_exactly_the_eight_tiles() -> None:
    request = demo.demo_scan_request("demo-1")
    assert request.scan_id == "demo-1" and request.demo and request.provider == "demo"
    plan = plan_scan(request, "xyz")
    assert list(plan.tiles) == demo.demo_tiles()
    assert len(plan.tiles) == 8 and (plan.zoom, plan.fetch_zoom) == (16, 18)
    xs = {t.x for t in plan.tiles}
    ys = {t.y for t in plan.tiles}
    assert len(xs) == 4 and len(ys) == 2
    lon, lat = plan.tiles[0].center()
    assert abs(lon - 26.87) < 0.05 and abs(lat - 51.30) < 0.05
    assert demo.demo_scan_request().scan_id != demo.demo_scan_request().scan_id


def test_demo_notice_says_what_the_imagery_is() -> None:
    assert demo.DEMO_NOTICE.startswith("Demo area: real aerial images")
    assert "texty.org.ua" in demo.DEMO_NOTICE and "illustrative coordinates" in demo.DEMO_NOTICE


def test_demo_images(shared_data: Path) -> None:
    images = demo.demo_images(shared_data / "tiles")
    assert set(images) == set(demo.demo_tiles())
    assert all(i.shape == (1024, 1024, 3) and i.dtype == np.uint8 for i in images.values())
    layout = {d.source: images[d.tile] for d in demo.demo_layout()}
    assert np.array_equal(layout["positive1 flipped left-right"], layout["positive1"][:, ::-1])
    assert np.array_equal(layout["positive2 flipped top-bottom"], layout["positive2"][::-1])
    assert np.array_equal(layout["negative1 rotated 90"], np.rot90(layout["negative1"]))


@pytest.fixture
async def demo_server(shared_data: Path) -> AsyncIterator[TestServer]:
    server = TestServer(demo.make_app(shared_data / "tiles"), host="127.0.0.1", port=0)
    await server.start_server()
    yield server
    await server.close()


def url_template(server: TestServer) -> str:
    return str(server.make_url("/tiles/")) + "{z}/{x}/{y}.png"


async def test_stitched_scan_tiles_equal_the_source_images(demo_server, shared_data) -> None:
    images = demo.demo_images(shared_data / "tiles")
    provider = XyzProvider(url_template(demo_server), local_fetcher(), name="demo")
    try:
        for tile in demo.demo_tiles():
            result = await fetch_scan_tile(provider, tile, 18)
            assert np.array_equal(result.image, images[tile]), tile
            assert result.imagery_date == demo.DEMO_IMAGERY_DATE
    finally:
        await provider.close()


async def test_server_answers_404_outside_and_serves_coarser_zooms(demo_server) -> None:
    first = demo.demo_tiles()[0]
    async with ClientSession() as session:

        async def get(z: int, x: int, y: int) -> tuple[int, bytes, Any]:
            async with session.get(demo_server.make_url(f"/tiles/{z}/{x}/{y}.png")) as r:
                return r.status, await r.read(), r.headers.copy()

        assert (await get(18, 0, 0))[0] == 404
        assert (await get(18, first.x * 4 - 1, first.y * 4))[0] == 404  # just west of the area
        assert (await get(19, first.x * 8, first.y * 8))[0] == 404
        for z in (16, 14, 10):
            parent = Tile(first.x >> (16 - z), first.y >> (16 - z), z)
            status, body, headers = await get(parent.z, parent.x, parent.y)
            assert status == 200 and headers["Content-Type"] == "image/png", z
            assert body.startswith(b"\x89PNG")
        status, body, headers = await get(16, first.x, first.y)
        assert decode_image(body, "z16").shape == (256, 256, 3)  # fully inside: opaque
        async with session.get(
            demo_server.make_url(f"/tiles/16/{first.x}/{first.y}.png"),
            headers={"If-None-Match": headers["ETag"]},
        ) as r:
            assert r.status == 304
