"""Providers against real aiohttp servers on loopback, serving real image bytes."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from amberscan.common.settings import Settings, replace
from amberscan.errors import InvalidImage, PoisonMessage, TransientError
from amberscan.geo.tiles import Tile
from amberscan.imagery.grid import plan_children, split
from amberscan.imagery.providers import (
    BingProvider,
    LocalProvider,
    ProviderError,
    TileNotFound,
    XyzProvider,
    fetch_scan_tile,
    provider_for,
)
from amberscan.vision.imageio import encode_png, read_image
from tests.sources import local_fetcher, local_guard

SCAN = Tile(37659, 21852, 16)
Serve = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture(scope="module")
def scan_image(shared_data: Path) -> np.ndarray:
    """A real 1024×1024 aerial image (positive1, resized)."""
    image = read_image(shared_data / "tiles" / "positive1.png")
    return np.asarray(Image.fromarray(image).resize((1024, 1024), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def child_pngs(scan_image: np.ndarray) -> dict[Tile, bytes]:
    children = plan_children(SCAN, 18)
    return {c.tile: encode_png(b) for c, b in zip(children, split(scan_image, 4), strict=True)}


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(app: web.Application) -> TestServer:
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def xyz_app(child_pngs: dict[Tile, bytes], hook=None) -> web.Application:
    async def tile(request: web.Request) -> web.Response:
        z, x, y = (int(request.match_info[k]) for k in "zxy")
        if hook is not None:
            answer = await hook(request, Tile(x, y, z))
            if answer is not None:
                return answer
        data = child_pngs.get(Tile(x, y, z))
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/png")

    app = web.Application()
    app.router.add_get(r"/{z:\d+}/{x:\d+}/{y:\d+}.png", tile)
    return app


def template(server: TestServer) -> str:
    return str(server.make_url("/")) + "{z}/{x}/{y}.png"


async def test_xyz_scan_tile_equals_the_source(serve: Serve, scan_image, child_pngs) -> None:
    async def dated(request: web.Request, tile: Tile) -> web.Response:
        return web.Response(
            body=child_pngs[tile],
            content_type="image/png",
            headers={"X-Imagery-Date": "2015-06-01"},
        )

    server = await serve(xyz_app(child_pngs, dated))
    provider = XyzProvider(template(server), local_fetcher())
    try:
        result = await fetch_scan_tile(provider, SCAN, 18)
    finally:
        await provider.close()
    assert result.image.shape == (1024, 1024, 3)
    assert np.array_equal(result.image, scan_image)
    assert result.imagery_date == "2015-06-01"


async def test_quadkey_template(serve: Serve, scan_image, child_pngs) -> None:
    by_quadkey = {t.quadkey: data for t, data in child_pngs.items()}

    async def tile(request: web.Request) -> web.Response:
        return web.Response(body=by_quadkey[request.match_info["q"]], content_type="image/png")

    app = web.Application()
    app.router.add_get(r"/a{q:\d+}.png", tile)
    server = await serve(app)
    provider = XyzProvider(
        str(server.make_url("/")) + "a{q}.png", local_fetcher(), imagery_date="2014-10-11"
    )
    try:
        result = await fetch_scan_tile(provider, SCAN, 18)
    finally:
        await provider.close()
    assert np.array_equal(result.image, scan_image)
    assert result.imagery_date == "2014-10-11"


async def test_retries_503_then_succeeds(serve: Serve, child_pngs) -> None:
    calls = 0

    async def flaky(request: web.Request, tile: Tile) -> web.Response | None:
        nonlocal calls
        calls += 1
        return web.Response(status=503) if calls <= 2 else None

    server = await serve(xyz_app(child_pngs, flaky))
    child = next(iter(child_pngs))
    provider = XyzProvider(template(server), local_fetcher(retries=3, backoff_s=0.01))
    try:
        fetched = await provider.fetch(child)
    finally:
        await provider.close()
    assert fetched.data == child_pngs[child]
    assert calls == 3


async def test_persistent_5xx_and_429_give_a_transient_error(serve: Serve, child_pngs) -> None:
    statuses = iter([429, 500, 502, 503, 504])

    async def failing(request: web.Request, tile: Tile) -> web.Response:
        return web.Response(status=next(statuses))

    server = await serve(xyz_app(child_pngs, failing))
    child = next(iter(child_pngs))
    provider = XyzProvider(template(server), local_fetcher(retries=4, backoff_s=0.01))
    try:
        with pytest.raises(TransientError, match=rf"/18/{child.x}/{child.y}.png: gave up after 5"):
            await provider.fetch(child)
    finally:
        await provider.close()


async def test_connection_refused_is_transient(unused_tcp_port: int) -> None:
    provider = XyzProvider(
        f"http://127.0.0.1:{unused_tcp_port}/{{z}}/{{x}}/{{y}}.png",
        local_fetcher(retries=1, backoff_s=0.01),
    )
    try:
        with pytest.raises(TransientError, match="ClientConnectorError"):
            await provider.fetch(Tile(1, 1, 2))
    finally:
        await provider.close()


async def test_timeout_is_transient(serve: Serve, child_pngs) -> None:
    async def stuck(request: web.Request, tile: Tile) -> None:
        await asyncio.sleep(2)  # on purpose: answers long after the fetcher's 0.2 s timeout
        return None

    server = await serve(xyz_app(child_pngs, stuck))
    provider = XyzProvider(
        template(server), local_fetcher(timeout_s=0.2, retries=1, backoff_s=0.01)
    )
    try:
        with pytest.raises(TransientError, match="gave up after 2 attempts .*Timeout"):
            await provider.fetch(next(iter(child_pngs)))
    finally:
        await provider.close()


async def test_404_is_poison_naming_the_url(serve: Serve, child_pngs) -> None:
    missing = dict(child_pngs)
    gone = plan_children(SCAN, 18)[6].tile
    del missing[gone]
    server = await serve(xyz_app(missing))
    provider = XyzProvider(template(server), local_fetcher(retries=3, backoff_s=0.01))
    try:
        with pytest.raises(TileNotFound) as caught:
            await fetch_scan_tile(provider, SCAN, 18)
    finally:
        await provider.close()
    assert f"/18/{gone.x}/{gone.y}.png: 404 Not Found" in str(caught.value)
    assert provider.fetcher.requests == 16  # a 404 is not retried


@pytest.mark.parametrize("corrupt", ["truncated", "html", "tiny"])
async def test_corrupt_image_is_poison_naming_the_tile(serve: Serve, child_pngs, corrupt) -> None:
    bad = dict(child_pngs)
    victim = plan_children(SCAN, 18)[9].tile
    bad[victim] = {
        "truncated": child_pngs[victim][:5000],
        "html": b"<html>rate limited</html>",
        "tiny": encode_png(np.zeros((64, 64, 3), np.uint8)),
    }[corrupt]
    server = await serve(xyz_app(bad))
    provider = XyzProvider(template(server), local_fetcher())
    try:
        with pytest.raises(InvalidImage, match=rf"tile 18/{victim.x}/{victim.y}"):
            await fetch_scan_tile(provider, SCAN, 18)
    finally:
        await provider.close()


async def test_concurrency_limit_is_respected(serve: Serve, child_pngs) -> None:
    in_flight = peak = 0

    async def slow(request: web.Request, tile: Tile) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return None

    server = await serve(xyz_app(child_pngs, slow))
    provider = XyzProvider(template(server), local_fetcher(concurrency=3))
    try:
        await fetch_scan_tile(provider, SCAN, 18)
    finally:
        await provider.close()
    assert peak == 3


async def test_rate_limit_spaces_requests(serve: Serve, child_pngs) -> None:
    server = await serve(xyz_app(child_pngs))
    provider = XyzProvider(template(server), local_fetcher(rate_per_s=40))
    started = time.monotonic()
    try:
        await fetch_scan_tile(provider, SCAN, 18)
    finally:
        await provider.close()
    assert time.monotonic() - started >= 15 / 40 * 0.9  # 16 requests, 1/40 s apart


async def test_etag_revalidation(serve: Serve, child_pngs) -> None:
    seen: list[str] = []

    async def etagged(request: web.Request, tile: Tile) -> web.Response:
        seen.append(request.headers.get("If-None-Match", ""))
        etag = f'"{tile.quadkey}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=child_pngs[tile], content_type="image/png", headers={"ETag": etag})

    server = await serve(xyz_app(child_pngs, etagged))
    child = next(iter(child_pngs))
    provider = XyzProvider(template(server), local_fetcher())
    try:
        first = await provider.fetch(child)
        second = await provider.fetch(child)
    finally:
        await provider.close()
    assert first.data == second.data == child_pngs[child]
    assert seen == ["", f'"{child.quadkey}"']
    assert provider.fetcher.revalidated == 1


async def test_revalidated_entry_evicted_in_flight_is_still_answered(
    serve: Serve, child_pngs
) -> None:
    """A 304 whose cache entry other fetches evicted while it was in flight (a scan fetches far
    more children at once than the cache holds) answers from the entry it was sent with."""

    async def etagged(request: web.Request, tile: Tile) -> web.Response:
        etag = f'"{tile.quadkey}"'
        if request.headers.get("If-None-Match") == etag:
            await asyncio.sleep(0.3)  # the other fetches' 200s arrive first and evict it
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=child_pngs[tile], content_type="image/png", headers={"ETag": etag})

    server = await serve(xyz_app(child_pngs, etagged))
    children = list(child_pngs)
    provider = XyzProvider(template(server), local_fetcher(etag_cache_size=1))
    try:
        await provider.fetch(children[0])  # the one cached entry
        again = await asyncio.gather(*(provider.fetch(c) for c in children))
    finally:
        await provider.close()
    assert [f.data for f in again] == [child_pngs[c] for c in children]
    assert provider.fetcher.revalidated == 1


KEY = "secret-bing-key"


def bing_app(child_pngs: dict[Tile, bytes], no_tile: Tile | None = None) -> web.Application:
    """Shaped like the Bing Maps REST imagery metadata API and its tile servers."""
    jpegs = {}
    for tile, png in child_pngs.items():
        buffer = io.BytesIO()
        Image.open(io.BytesIO(png)).save(buffer, format="JPEG", quality=95)
        jpegs[tile.quadkey] = buffer.getvalue()

    def check_key(request: web.Request) -> None:
        if request.query.get("key") != KEY:
            raise web.HTTPUnauthorized(text='{"errorDetails": ["Access was denied."]}')

    async def metadata(request: web.Request) -> web.Response:
        check_key(request)
        assert request.query["include"] == "ImageryProviders"
        base = f"http://{request.host}"
        resource = {
            "__type": "ImageryMetadata:http://schemas.microsoft.com/search/local/ws/rest/v1",
            "imageHeight": 256,
            "imageWidth": 256,
            "imageUrl": base + "/tiles/{subdomain}/a{quadkey}.jpeg?g=14000",
            "imageUrlSubdomains": ["t0", "t1", "t2", "t3"],
            "imageryProviders": [{"attribution": "© Vexcel Imaging", "coverageAreas": []}],
            "vintageEnd": None,
            "vintageStart": None,
            "zoomMax": 21,
            "zoomMin": 1,
        }
        return web.json_response({"resourceSets": [{"estimatedTotal": 1, "resources": [resource]}]})

    async def point_metadata(request: web.Request) -> web.Response:
        check_key(request)
        lat, lon = (float(v) for v in request.match_info["point"].split(","))
        assert 51 < lat < 52 and 26 < lon < 28 and request.query["zl"] == "18"
        resource = {"vintageStart": "11 Oct 2014", "vintageEnd": "31 Dec 2015", "zoomMax": 21}
        return web.json_response({"resourceSets": [{"resources": [resource]}]})

    async def tile(request: web.Request) -> web.Response:
        quadkey = request.match_info["q"]
        assert request.match_info["sub"] in ("t0", "t1", "t2", "t3")
        if no_tile is not None and quadkey == no_tile.quadkey:
            return web.Response(
                body=jpegs[quadkey],
                content_type="image/jpeg",
                headers={"X-VE-Tile-Info": "no-tile"},
            )
        return web.Response(body=jpegs[quadkey], content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/REST/v1/Imagery/Metadata/Aerial", metadata)
    app.router.add_get("/REST/v1/Imagery/Metadata/Aerial/{point}", point_metadata)
    app.router.add_get(r"/tiles/{sub}/a{q:\d+}.jpeg", tile)
    return app


async def test_bing_provider(serve: Serve, scan_image, child_pngs) -> None:
    server = await serve(bing_app(child_pngs))
    provider = BingProvider(KEY, local_fetcher(), rest_url=str(server.make_url("/REST/v1")))
    try:
        result = await fetch_scan_tile(provider, SCAN, 18)
    finally:
        await provider.close()
    assert result.image.shape == (1024, 1024, 3)
    # JPEG is lossy: close to the source, not equal
    assert np.abs(result.image.astype(int) - scan_image).mean() < 4
    assert result.imagery_date == "2015-12-31"


async def test_bing_no_tile_is_poison(serve: Serve, child_pngs) -> None:
    empty = plan_children(SCAN, 18)[3].tile
    server = await serve(bing_app(child_pngs, no_tile=empty))
    provider = BingProvider(KEY, local_fetcher(), rest_url=str(server.make_url("/REST/v1")))
    try:
        with pytest.raises(TileNotFound, match=f"tile {empty} .*no imagery"):
            await fetch_scan_tile(provider, SCAN, 18)
    finally:
        await provider.close()


async def test_bing_bad_key_is_refused_without_showing_the_key(serve: Serve, child_pngs) -> None:
    server = await serve(bing_app(child_pngs))
    provider = BingProvider("wrong-key", local_fetcher(), rest_url=str(server.make_url("/REST/v1")))
    try:
        with pytest.raises(ProviderError, match="HTTP 401") as caught:
            await provider.fetch(SCAN)
    finally:
        await provider.close()
    assert "wrong-key" not in str(caught.value) and "key=***" in str(caught.value)


async def test_local_provider(tmp_path: Path, scan_image, child_pngs) -> None:
    for tile, png in child_pngs.items():
        path = tmp_path / str(tile.z) / str(tile.x) / f"{tile.y}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
    provider = LocalProvider(tmp_path, imagery_date="2026-05-01", guard=local_guard())
    result = await fetch_scan_tile(provider, SCAN, 18)
    assert np.array_equal(result.image, scan_image)
    assert result.imagery_date == "2026-05-01"
    gone = plan_children(SCAN, 18)[0].tile
    (tmp_path / "18" / str(gone.x) / f"{gone.y}.png").unlink()
    with pytest.raises(TileNotFound, match=f"tile {gone}: no .*/18/{gone.x}/{gone.y}.png"):
        await fetch_scan_tile(provider, SCAN, 18)


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("xyz", {}, "AMBERSCAN_XYZ_URL"),
        ("bing", {}, "AMBERSCAN_BING_API_KEY"),
        ("local", {}, "AMBERSCAN_LOCAL_TILES_DIR"),
        ("sentinel", {}, "unknown imagery provider 'sentinel'"),
    ],
)
def test_provider_for_unconfigured(name: str, fields: dict, message: str) -> None:
    bare = replace(
        Settings(), imagery={"xyz_url": "", "bing_api_key": "", "local_tiles_dir": None, **fields}
    )
    with pytest.raises(PoisonMessage, match=message):
        provider_for(name, bare)


def test_provider_for_configured() -> None:
    configured = replace(
        Settings(),
        imagery={
            "xyz_url": "http://127.0.0.1:1/{z}/{x}/{y}.png",
            "local_tiles_dir": Path("/tmp"),
            "bing_api_key": "k",
        },
    )
    assert provider_for("xyz", configured).name == "xyz"
    assert provider_for("local", configured).name == "local"
    assert provider_for("bing", configured).name == "bing"
    demo = provider_for("demo", configured)
    assert isinstance(demo, XyzProvider) and demo.url_template.startswith("http://127.0.0.1:18080")


async def test_an_oversized_body_is_refused_while_it_streams(serve: Serve, child_pngs) -> None:
    """#26 defect 7: a provider's body was read whole, however large. A body past the cap is
    refused as it streams (chunked, no Content-Length), and one that declares its size at once."""
    cap, chunk = 1 << 20, 1 << 16
    sent = {"chunked": 0, "declared": 0}

    async def huge(request: web.Request, tile: Tile) -> web.StreamResponse:
        declared = tile.x % 2 == 1
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        if declared:
            response.content_length = 32 * cap
        await response.prepare(request)
        try:
            for _ in range(32 * cap // chunk):
                await response.write(b"\x89PNG" + bytes(chunk - 4))
                sent["declared" if declared else "chunked"] += chunk
        except ConnectionError:
            pass  # the fetcher hung up, as it should
        return response

    server = await serve(xyz_app(child_pngs, huge))
    children = sorted(child_pngs, key=lambda t: t.x)
    provider = XyzProvider(
        template(server), local_fetcher(retries=1, backoff_s=0.01, max_body_bytes=cap)
    )
    try:
        for child in (
            next(c for c in children if c.x % 2 == 0),
            next(c for c in children if c.x % 2 == 1),
        ):
            with pytest.raises(ProviderError) as caught:
                await provider.fetch(child)
            assert f"/18/{child.x}/{child.y}.png: the body is larger than {cap} bytes" in str(
                caught.value
            )
    finally:
        await provider.close()
    assert provider.fetcher.requests == 2  # not retried: it would be as large again
    # The fetcher hung up: the server wrote what the socket buffers took, not the 32 MiB.
    assert sent["chunked"] < 16 * cap, sent


async def test_a_huge_child_is_refused_before_any_child_is_decoded(
    serve: Serve, child_pngs
) -> None:
    """#26 defect 7: every child was decoded (up to 40 Mpx each) before the stitch checked its
    size. A child is refused on its declared size, before its pixels are decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000), (90, 120, 60)).save(buffer, format="PNG")
    big = plan_children(SCAN, 18)[5].tile
    server = await serve(xyz_app({**child_pngs, big: buffer.getvalue()}))
    provider = XyzProvider(template(server), local_fetcher(retries=1, backoff_s=0.01))
    try:
        with pytest.raises(InvalidImage) as caught:
            await fetch_scan_tile(provider, SCAN, 18)
    finally:
        await provider.close()
    assert f"18/{big.x}/{big.y}" in str(caught.value)
    assert "declares 6000x6000 = 36000000 pixels, more than the limit of 65536" in str(caught.value)
