"""The source policy at every place a provider opens something (#26 defect 8), over real HTTP,
real GDAL and real files: a source named on the bus could make the readers fetch internal
addresses (loopback, private, link-local), follow a redirect there, open any local file or
glob, or read any bucket with the service's keys. Each provider is made by `provider_for` from
settings, as the tiler, watch and the scan command make them.

The servers listen on two loopback addresses: 127.0.0.2 is listed (it stands for an allowed
public host), 127.0.0.1 is not (it stands for an internal address)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from amberscan.common.settings import ImageryConfig, Settings, replace
from amberscan.imagery.providers import (
    GeotiffProvider,
    RasterOptions,
    SourceRefused,
    SourceSpec,
    StacProvider,
    provider_for,
)
from amberscan.tiler import demo
from tests.imagery.rasters import (
    Catalogue,
    Served,
    WmtsServer,
    file_server,
    tile_cog,
    wmts_app,
    wmts_capabilities,
)
from tests.streams import free_port, served

ALLOWED, INTERNAL = "127.0.0.2", "127.0.0.1"
DATED = {"TIFFTAG_DATETIME": "2019:05:01 10:00:00"}
TILES = demo.demo_tiles()


def policy(base: Settings, **fields: str) -> Settings:
    """`base` whose policy lists 127.0.0.2 only (http allowed), with `fields` changed."""
    return replace(
        base,
        imagery={
            "source_schemes": "https,http,s3",
            "source_allowed_hosts": f"*,{ALLOWED}",
            "source_allowed_roots": "",
            "source_allowed_buckets": "",
            **fields,
        },
    )


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return policy(base_settings)


def serve(app: web.Application, host: str) -> AbstractAsyncContextManager[str]:
    """`app` on `host` (a free port) while the block runs; yields its base URL."""
    return served(app, host=host)


def counted(app: web.Application, seen: list[str]) -> web.Application:
    """`app`, recording the path of every request it receives."""

    @web.middleware
    async def count(request: web.Request, handler: Callable) -> web.StreamResponse:
        seen.append(request.path)
        return await handler(request)

    app.middlewares.append(count)
    return app


def redirecting(target: str) -> web.Application:
    """Every request answered 302 to the same path on `target`."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{target}{request.path_qs}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app


@pytest.fixture
def images(shared_data: Path) -> dict:
    return demo.demo_images(shared_data / "tiles")


async def test_an_xyz_redirect_to_an_internal_address_is_refused(
    settings: Settings, shared_data: Path
) -> None:
    seen: list[str] = []
    async with serve(counted(demo.make_app(shared_data / "tiles"), seen), INTERNAL) as inside:
        async with serve(redirecting(inside), ALLOWED) as outside:
            spec = SourceSpec("xyz", (f"{outside}/tiles/{{z}}/{{x}}/{{y}}.png",))
            provider = provider_for(spec, settings)
            try:
                with pytest.raises(SourceRefused) as refused:
                    await provider.scan_image(TILES[0], 18)
            finally:
                await provider.close()
    assert f"source {inside}/tiles/18/" in str(refused.value)
    assert str(refused.value).endswith(
        "refused: 127.0.0.1 is loopback and not in AMBERSCAN_SOURCE_ALLOWED_HOSTS"
    ), refused.value
    assert seen == [], f"the internal server was reached: {seen[:3]}"


async def test_a_name_that_resolves_to_loopback_is_refused(
    settings: Settings, shared_data: Path
) -> None:
    """`localhost` stands for a public-looking name (localtest.me, nip.io) resolving inside:
    what is judged is every address it resolves to, as the connection is made."""
    seen: list[str] = []
    async with serve(counted(demo.make_app(shared_data / "tiles"), seen), INTERNAL) as inside:
        named = inside.replace(INTERNAL, "localhost")
        provider = provider_for(
            SourceSpec("xyz", (f"{named}/tiles/{{z}}/{{x}}/{{y}}.png",)), settings
        )
        try:
            with pytest.raises(
                SourceRefused, match="localhost resolves to 127.0.0.1, which is loopback"
            ):
                await provider.scan_image(TILES[0], 18)
        finally:
            await provider.close()
    assert seen == []


async def test_an_allowed_host_is_read(settings: Settings, shared_data: Path, images) -> None:
    async with serve(demo.make_app(shared_data / "tiles"), ALLOWED) as outside:
        provider = provider_for(
            SourceSpec("xyz", (f"{outside}/tiles/{{z}}/{{x}}/{{y}}.png",)), settings
        )
        try:
            read = await provider.scan_image(TILES[0], 18)
        finally:
            await provider.close()
    assert np.array_equal(read.image, images[TILES[0]])


async def test_a_geotiff_url_redirected_inside_is_refused_before_gdal_opens_it(
    settings: Settings, tmp_path: Path, images
) -> None:
    """GDAL follows redirects by itself: the redirect is followed and refused first."""
    tile_cog(tmp_path / "cog.tif", TILES[0], images[TILES[0]], tags=DATED)
    served = Served()
    async with serve(file_server(tmp_path, served), INTERNAL) as inside:
        async with serve(redirecting(inside), ALLOWED) as outside:
            provider = provider_for(SourceSpec("geotiff", (f"{outside}/cog.tif",)), settings)
            with pytest.raises(SourceRefused) as refused:
                await provider.scan_image(TILES[0], 18)
    assert str(refused.value) == (
        f"source {inside}/cog.tif refused: 127.0.0.1 is loopback and not in "
        "AMBERSCAN_SOURCE_ALLOWED_HOSTS"
    )
    assert served.requests == [], f"the internal server was read: {served.requests[:3]}"


async def test_a_geotiff_on_an_allowed_host_is_read(
    settings: Settings, tmp_path: Path, images
) -> None:
    tile_cog(tmp_path / "cog.tif", TILES[0], images[TILES[0]], tags=DATED)
    async with serve(file_server(tmp_path, Served()), ALLOWED) as outside:
        provider = provider_for(SourceSpec("geotiff", (f"{outside}/cog.tif",)), settings)
        read = await provider.scan_image(TILES[0], 18)
    assert np.array_equal(read.image, images[TILES[0]])


async def test_local_files_and_globs_outside_the_roots_are_refused(
    base_settings: Settings, tmp_path: Path, images
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    tile_cog(outside / "secret.tif", TILES[0], images[TILES[0]], tags=DATED)
    tile_cog(allowed / "ortho.tif", TILES[0], images[TILES[0]], tags=DATED)
    (allowed / "link.tif").symlink_to(outside / "secret.tif")
    settings = policy(base_settings, source_allowed_roots=str(allowed))
    root_note = f"is not under AMBERSCAN_SOURCE_ALLOWED_ROOTS ({allowed})"
    for source, reason in [
        (str(outside / "secret.tif"), f"{outside / 'secret.tif'} {root_note}"),
        (f"file://{outside / 'secret.tif'}", f"{outside / 'secret.tif'} {root_note}"),
        ("/**/*.tif", f"/ {root_note}"),
        (f"{tmp_path}/*/*.tif", f"{tmp_path} {root_note}"),
        (str(allowed / "link.tif"), f"{outside / 'secret.tif'} {root_note}"),  # a symlink out
        (f"{allowed}/../outside/secret.tif", f"{outside / 'secret.tif'} {root_note}"),
        (
            f"/vsicurl/http://{INTERNAL}/x.tif",
            "GDAL virtual file systems (/vsi...) are not sources",
        ),
    ]:
        provider = provider_for(SourceSpec("geotiff", (source,)), settings)
        with pytest.raises(SourceRefused) as refused:
            await provider.scan_image(TILES[0], 18)
        assert str(refused.value).endswith(f"refused: {reason}"), (source, str(refused.value))
    # A folder under the root is read, and its symlink out of it refused.
    folder = provider_for(SourceSpec("geotiff", (str(allowed),)), settings)
    with pytest.raises(SourceRefused, match="secret.tif is not under"):
        await folder.scan_image(TILES[0], 18)
    (allowed / "link.tif").unlink()
    read = await provider_for(SourceSpec("geotiff", (str(allowed),)), settings).scan_image(
        TILES[0], 18
    )
    assert np.array_equal(read.image, images[TILES[0]])


async def test_a_local_tile_folder_outside_the_roots_is_refused(
    base_settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "18").mkdir()
    provider = provider_for(SourceSpec("local", (str(tmp_path),)), policy(base_settings))
    with pytest.raises(
        SourceRefused, match="local paths are refused .AMBERSCAN_SOURCE_ALLOWED_ROOTS lists none."
    ):
        await provider.scan_image(TILES[0], 18)


async def test_an_unlisted_bucket_is_refused_before_it_is_listed_or_read(
    base_settings: Settings,
) -> None:
    settings = policy(base_settings, source_allowed_buckets="imagery")
    for source in ("s3://amberscan/tiles/a.tif", "s3://other-tenant/"):
        provider = provider_for(SourceSpec("geotiff", (source,)), settings)
        with pytest.raises(SourceRefused) as refused:
            await provider.scan_image(TILES[0], 18)
        bucket = source.removeprefix("s3://").split("/")[0]
        assert str(refused.value) == (
            f"source {source} refused: bucket {bucket!r} is not in AMBERSCAN_SOURCE_ALLOWED_BUCKETS"
        )


async def test_a_stac_asset_on_an_internal_address_is_refused(
    settings: Settings, tmp_path: Path, images
) -> None:
    """The catalogue is on an allowed host; its item's asset href points inside."""
    served = Served()
    async with serve(file_server(tmp_path, served), INTERNAL) as inside:
        async with serve(file_server(tmp_path, Served()), ALLOWED) as outside:
            catalogue = Catalogue(tmp_path, inside, images)  # asset hrefs on the inside server
            url = catalogue.write([catalogue.item(TILES[0], "2018-05-01")]).replace(inside, outside)
            provider = provider_for(SourceSpec("stac", (url,)), settings)
            assert isinstance(provider, StacProvider)
            with pytest.raises(SourceRefused) as refused:
                await provider.scan_image(TILES[0], 18)
    assert str(refused.value) == (
        f"source {inside}/cogs/{TILES[0].quadkey}-2018-05-01.tif refused: 127.0.0.1 is loopback "
        "and not in AMBERSCAN_SOURCE_ALLOWED_HOSTS"
    )
    assert served.requests == []


async def test_a_stac_catalogue_redirected_inside_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    served = Served()
    (tmp_path / "catalog.json").write_text("{}")
    async with serve(file_server(tmp_path, served), INTERNAL) as inside:
        async with serve(redirecting(inside), ALLOWED) as outside:
            provider = provider_for(SourceSpec("stac", (f"{outside}/catalog.json",)), settings)
            with pytest.raises(
                SourceRefused, match=f"source {inside}/catalog.json refused: 127.0.0.1 is loopback"
            ):
                await provider.scan_image(TILES[0], 18)
    assert served.requests == []


async def test_a_wmts_resource_url_to_an_internal_address_is_refused(
    settings: Settings, shared_data: Path
) -> None:
    """The capabilities come from an allowed host; their ResourceURL template points inside."""
    state = WmtsServer(times=["2019-05-01"])
    async with serve(wmts_app(shared_data / "tiles", state), INTERNAL) as inside:

        async def capabilities(request: web.Request) -> web.Response:
            return web.Response(
                text=wmts_capabilities(inside, state.times), content_type="application/xml"
            )

        app = web.Application()
        app.router.add_get("/wmts/capabilities.xml", capabilities)
        async with serve(app, ALLOWED) as outside:
            provider = provider_for(
                SourceSpec("wmts", (f"{outside}/wmts/capabilities.xml",), layers=("ortho",)),
                settings,
            )
            try:
                with pytest.raises(SourceRefused) as refused:
                    await provider.scan_image(TILES[0], 18)
            finally:
                await provider.close()
    assert f"source {inside}/wmts/ortho/2019-05-01/GoogleMapsCompatible/18/" in str(refused.value)
    assert str(refused.value).endswith(
        "refused: 127.0.0.1 is loopback and not in AMBERSCAN_SOURCE_ALLOWED_HOSTS"
    )
    assert state.sent == []


def test_the_production_defaults(base_settings: Settings) -> None:
    """What a deployment gets without listing anything: https (and s3 for listed buckets) only,
    no private address, no local path."""
    from amberscan.imagery.providers import SourceGuard

    fields = ImageryConfig.model_fields
    defaults = {
        name: fields[name].default
        for name in (
            "source_schemes",
            "source_allowed_hosts",
            "source_allowed_roots",
            "source_allowed_buckets",
            "local_tiles_dir",
        )
    }
    assert defaults["source_schemes"] == "https,s3" and defaults["source_allowed_hosts"] == "*"
    production = SourceGuard.from_settings(replace(base_settings, imagery=defaults))
    for source, reason in [
        ("http://tiles.example.org/1/2/3.png", "scheme http is not in AMBERSCAN_SOURCE_SCHEMES"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("https://10.0.0.3/a.tif", "10.0.0.3 is private"),
        ("/data/ortho.tif", "local paths are refused"),
        ("s3://amberscan/a.tif", "bucket 'amberscan' is not in"),
    ]:
        with pytest.raises(SourceRefused, match=reason):
            production.check(source, resolve=False)


def redirecting_later_reads(root: Path, target: str, served: Served) -> web.Application:
    """`root`'s files, the first GET of each answered; every later GET redirected to the same
    path on `target` (a server that passes the first look, then sends GDAL's range reads
    inside)."""
    files = file_server(root, served)
    answered: set[str] = set()

    @web.middleware
    async def later(request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.method == "GET" and request.path in answered:
            served.requests.append((f"redirected {request.path}", request.headers.get("Range", "")))
            raise web.HTTPFound(f"{target}{request.path_qs}")
        if request.method == "GET":
            answered.add(request.path)
        return await handler(request)

    files.middlewares.append(later)
    return files


async def test_a_geotiff_whose_later_range_reads_are_redirected_inside_is_refused(
    settings: Settings, tmp_path: Path, images
) -> None:
    """GDAL follows a redirect on any range read, not only the first: the server answers the
    first look at the file, then redirects the reads of its blocks to an internal address."""
    tile_cog(tmp_path / "cog.tif", TILES[0], images[TILES[0]], tags=DATED)
    inside_served, outside_served = Served(), Served()
    async with serve(file_server(tmp_path, inside_served), INTERNAL) as inside:
        app = redirecting_later_reads(tmp_path, inside, outside_served)
        async with serve(app, ALLOWED) as outside:
            provider = provider_for(SourceSpec("geotiff", (f"{outside}/cog.tif",)), settings)
            with pytest.raises(SourceRefused) as refused:
                await provider.scan_image(TILES[0], 18)
    assert any(path.startswith("redirected") for path, _ in outside_served.requests)
    assert str(refused.value) == (
        f"source {inside}/cog.tif refused: 127.0.0.1 is loopback and not in "
        "AMBERSCAN_SOURCE_ALLOWED_HOSTS"
    )
    assert inside_served.requests == [], f"the internal server was read: {inside_served.requests}"


async def test_a_raster_and_a_catalogue_are_read_from_the_address_checked(
    settings: Settings, tmp_path: Path, images
) -> None:
    """DNS rebinding: a name that resolves to an allowed address when checked and to an
    internal one when the reader resolves it again. Here the policy's resolver answers
    `localhost` with 127.0.0.2 (allowed) and the system's with 127.0.0.1 (internal), both
    serving on the same port: the raster and the STAC catalogue must be read from 127.0.0.2."""
    tile_cog(tmp_path / "cog.tif", TILES[0], images[TILES[0]], tags=DATED)
    inside_served, outside_served = Served(), Served()
    port = free_port(ALLOWED)
    async with (
        served(file_server(tmp_path, inside_served), port=port, host=INTERNAL),
        served(file_server(tmp_path, outside_served), port=port, host=ALLOWED),
    ):
        named = f"http://localhost:{port}"
        options = RasterOptions.from_settings(settings)
        checked = dataclasses.replace(options.guard, resolve=lambda host, port: [ALLOWED])
        options = dataclasses.replace(options, guard=checked)
        read = await GeotiffProvider([f"{named}/cog.tif"], options).scan_image(TILES[0], 18)
        catalogue = Catalogue(tmp_path, named, images)
        url = catalogue.write([catalogue.item(TILES[0], "2018-05-01")])
        stac = await StacProvider(url, options).scan_image(TILES[0], 18)
    assert np.array_equal(read.image, images[TILES[0]])
    assert np.array_equal(stac.image, images[TILES[0]])
    assert inside_served.requests == [], f"the internal server was read: {inside_served.requests}"
    assert {path for path, _ in outside_served.requests} >= {"/cog.tif", "/stac/catalog.json"}
