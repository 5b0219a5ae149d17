"""The geotiff provider on real COGs made from the shared tiles: local files, over HTTP with
range requests, from MinIO through GDAL's S3 access; reprojection from UTM; masks; bad sources."""

from __future__ import annotations

from pathlib import Path

import mercantile
import numpy as np
import pytest
from rasterio.transform import from_origin

from amberscan.common.settings import Settings
from amberscan.errors import TransientError
from amberscan.geo.tiles import Tile
from amberscan.imagery.providers import GeotiffProvider, RasterOptions, SourceError, provider_for
from amberscan.imagery.providers.base import SourceSpec
from amberscan.tiler import demo
from tests.imagery.rasters import (
    Served,
    file_server,
    mercator_block_cog,
    mercator_transform,
    tile_cog,
    utm_block_cog,
    write_cog,
)
from tests.sources import local_sources
from tests.streams import free_port, served

OPTIONS = RasterOptions.from_settings(local_sources(Settings()))
TILES = [d.tile for d in demo.demo_layout()]


@pytest.fixture(scope="module")
def images(shared_data: Path) -> dict[Tile, np.ndarray]:
    return demo.demo_images(shared_data / "tiles")


@pytest.fixture(scope="module")
def cogs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cogs")
    return {
        "mercator": mercator_block_cog(root / "block-3857.tif", shared_data / "tiles"),
        "utm": utm_block_cog(root / "block-utm35n.tif", shared_data / "tiles"),
    }


async def test_aligned_cog_gives_the_demo_pixels(cogs: dict[str, Path], images) -> None:
    provider = GeotiffProvider([str(cogs["mercator"])], OPTIONS)
    for tile in TILES:
        read = await provider.scan_image(tile, 18)
        assert np.array_equal(read.image, images[tile]), tile
        assert read.imagery_date == "2017-05-01"  # TIFFTAG_DATETIME 2017:05:01 10:00:00
        assert read.coverage == 1.0
    (info,) = await provider.rasters()
    assert info.crs == "EPSG:3857" and 0.3 < info.resolution_m < 0.45  # ground m/px at 51.3 N
    footprint = await provider.footprint()
    w, s, e, n = footprint.bounds
    assert (w, n) == pytest.approx(TILES[0].bounds()[0:4:3], abs=1e-9)
    assert (e, s) == pytest.approx((TILES[-1].bounds()[2], TILES[-1].bounds()[1]), abs=1e-9)


async def test_over_http_only_the_needed_ranges_are_read(cogs: dict[str, Path], images) -> None:
    seen = Served()
    async with served(file_server(cogs["mercator"].parent, seen)) as base:
        provider = GeotiffProvider([f"{base}/{cogs['mercator'].name}"], OPTIONS)
        read = await provider.scan_image(TILES[0], 18)
    assert np.array_equal(read.image, images[TILES[0]])
    ranges = [r for path, r in seen.requests if path.endswith(".tif") and r]
    assert ranges and all(r.startswith("bytes=") for r in ranges)
    # One of eight scan tiles and the header: measured 2.1 MB of a 23 MB file.
    assert 0 < seen.bytes_sent < cogs["mercator"].stat().st_size / 4, seen


async def test_utm_cog_is_reprojected_onto_the_scan_tiles(cogs: dict[str, Path], images) -> None:
    provider = GeotiffProvider([str(cogs["utm"])], OPTIONS)
    (info,) = await provider.rasters()
    assert info.crs == "EPSG:32635" and info.imagery_date == "2018-06-02"
    for tile in TILES:
        read = await provider.scan_image(tile, 18)
        assert read.coverage > 0.99, (tile, read.coverage)
        # Two resamplings (to UTM and back) blur, but the picture is the demo's, in place.
        diff = np.abs(read.image.astype(np.int16) - images[tile].astype(np.int16))
        assert diff.mean() < 3, (tile, diff.mean())  # measured 0.9 to 1.6 grey levels
        a = read.image.astype(np.float64).ravel()
        b = images[tile].astype(np.float64).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.98  # measured ≥ 0.989
    # Beyond the block: the alpha band leaves nothing.
    outside = Tile(TILES[0].x - 1, TILES[0].y, 16)
    assert (await provider.scan_image(outside, 18)).coverage == 0.0


async def test_partly_covered_tile_reports_its_coverage(tmp_path: Path, images) -> None:
    tile = TILES[0]
    half = images[tile][:, :512]  # the western half only
    left, _, right, top = mercantile.xy_bounds(tile.x, tile.y, tile.z)
    px = (right - left) / 1024
    path = write_cog(
        tmp_path / "half.tif",
        np.moveaxis(half, -1, 0).copy(),
        crs="EPSG:3857",
        transform=from_origin(left, top, px, px),
        tags={"TIFFTAG_DATETIME": "2019:01:02 00:00:00"},
    )
    read = await GeotiffProvider([str(path)], OPTIONS).scan_image(tile, 18)
    assert read.coverage == pytest.approx(0.5, abs=0.01)
    assert np.array_equal(read.image[:, :512], half)
    assert not read.image[:, 520:].any()  # outside the raster: left black, and counted out


async def test_nodata_value_is_honoured(tmp_path: Path, images) -> None:
    tile = TILES[1]
    image = images[tile].copy()
    image[:700] = 0  # the northern 700 rows are nodata
    path = tile_cog(
        tmp_path / "nodata.tif",
        tile,
        image,
        nodata=0,
        tags={"TIFFTAG_DATETIME": "2019:01:02 00:00:00"},
    )
    read = await GeotiffProvider([str(path)], OPTIONS).scan_image(tile, 18)
    assert read.coverage == pytest.approx(1 - 700 / 1024, abs=0.01)


async def test_newest_file_wins_and_vintages_are_listed(tmp_path: Path, images) -> None:
    tile = TILES[2]
    old = tile_cog(
        tmp_path / "a.tif", tile, images[TILES[3]], tags={"TIFFTAG_DATETIME": "2014:06:01 00:00:00"}
    )
    new = tile_cog(
        tmp_path / "b.tif", tile, images[tile], tags={"TIFFTAG_DATETIME": "2016:06:01 00:00:00"}
    )
    provider = GeotiffProvider([str(tmp_path)], OPTIONS)  # a folder: both files
    read = await provider.scan_image(tile, 18)
    assert read.imagery_date == "2016-06-01" and np.array_equal(read.image, images[tile])
    older = await provider.scan_image(tile, 18, vintage="2014-06-01")
    assert older.imagery_date == "2014-06-01" and np.array_equal(older.image, images[TILES[3]])
    assert await provider.vintages(await provider.footprint()) == ["2014-06-01", "2016-06-01"]
    found = await provider.discover([tile, TILES[0]], "")
    assert dict(found.dates) == {tile: "2016-06-01"}
    assert old.exists() and new.exists()


async def test_file_added_to_a_folder_is_found(tmp_path: Path, images) -> None:
    tile_cog(
        tmp_path / "a.tif",
        TILES[0],
        images[TILES[0]],
        tags={"TIFFTAG_DATETIME": "2015:06:01 00:00:00"},
    )
    provider = GeotiffProvider([str(tmp_path)], OPTIONS)
    assert dict((await provider.discover(TILES[:2], "")).dates) == {TILES[0]: "2015-06-01"}
    tile_cog(
        tmp_path / "b.tif",
        TILES[1],
        images[TILES[1]],
        tags={"TIFFTAG_DATETIME": "2016:06:01 00:00:00"},
    )
    found = await provider.discover(TILES[:2], "")
    assert dict(found.dates) == {TILES[0]: "2015-06-01", TILES[1]: "2016-06-01"}


def test_imagery_date_fallback_and_refusal(tmp_path: Path, images) -> None:
    import asyncio

    path = tile_cog(tmp_path / "undated.tif", TILES[0], images[TILES[0]])
    with pytest.raises(SourceError, match="no capture date.*--imagery-date"):
        asyncio.run(GeotiffProvider([str(path)], OPTIONS).rasters())
    dated = GeotiffProvider([str(path)], OPTIONS, imagery_date="2013-08-09")
    assert asyncio.run(dated.scan_image(TILES[0], 18)).imagery_date == "2013-08-09"


@pytest.mark.parametrize("where", ["local", "http"])
async def test_missing_file_is_refused_naming_it(tmp_path: Path, where: str) -> None:
    if where == "local":
        with pytest.raises(SourceError, match=f"raster {tmp_path}/nope.tif: no such file"):
            await GeotiffProvider([str(tmp_path / "nope.tif")], OPTIONS).rasters()
        return
    async with served(file_server(tmp_path, Served())) as base:
        with pytest.raises(SourceError, match=f"raster {base}/nope.tif: no such file"):
            await GeotiffProvider([f"{base}/nope.tif"], OPTIONS).rasters()


async def test_raster_without_crs_is_refused(tmp_path: Path, images) -> None:
    path = write_cog(
        tmp_path / "nocrs.tif",
        np.moveaxis(images[TILES[0]], -1, 0).copy(),
        crs=None,
        transform=from_origin(0, 1024, 1, 1),
        tags={"TIFFTAG_DATETIME": "2019:01:02 00:00:00"},
    )
    with pytest.raises(SourceError, match="nocrs.tif: no coordinate reference system"):
        await GeotiffProvider([str(path)], OPTIONS).rasters()


async def test_30m_raster_is_refused_with_its_resolution(tmp_path: Path) -> None:
    # A Landsat-like 30 m/px scene over the demo area, in UTM 35N.
    bands = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    path = write_cog(
        tmp_path / "landsat.tif",
        bands,
        crs="EPSG:32635",
        transform=from_origin(560000, 5685000, 30, 30),
        tags={"TIFFTAG_DATETIME": "2019:01:02 00:00:00"},
    )
    with pytest.raises(SourceError, match=r"landsat.tif: 30\.0\d m/px is coarser than the 1 m/px"):
        await GeotiffProvider([str(path)], OPTIONS).rasters()


async def test_single_band_raster_is_refused(tmp_path: Path, images) -> None:
    grey = images[TILES[0]].mean(axis=2).astype(np.uint8)[None]
    path = tile_cog(
        tmp_path / "grey.tif",
        TILES[0],
        np.moveaxis(grey, 0, -1),
        tags={"TIFFTAG_DATETIME": "2019:01:02 00:00:00"},
    )
    with pytest.raises(SourceError, match="grey.tif: 1 colour band.*needs RGB"):
        await GeotiffProvider([str(path)], OPTIONS).rasters()


async def test_12_bit_raster_is_scaled_by_its_bit_depth(tmp_path: Path, images) -> None:
    tile = TILES[0]
    twelve = (images[tile].astype(np.uint16) * 16).transpose(2, 0, 1).copy()  # 0..4080
    path = write_cog(
        tmp_path / "12bit.tif",
        twelve,
        crs="EPSG:3857",
        transform=mercator_transform(tile),
        tags={"TIFFTAG_DATETIME": "2019:01:02 00:00:00"},
        nbits=12,
    )
    provider = GeotiffProvider([str(path)], OPTIONS)
    (info,) = await provider.rasters()
    assert info.rule.scale_max == 4095 and "NBITS=12" in info.rule.description
    read = await provider.scan_image(tile, 18)
    # v·16·255/4095 differs from v by at most 1 (rounding): the picture survives the scaling.
    assert np.abs(read.image.astype(int) - images[tile].astype(int)).max() <= 1


async def test_16_bit_raster_without_bit_depth_is_scaled_by_its_98th_percentile(
    tmp_path: Path, images
) -> None:
    tile = TILES[0]
    wide = (images[tile].astype(np.uint16) * 257).transpose(2, 0, 1).copy()
    path = tile_cog(
        tmp_path / "16bit.tif",
        tile,
        np.moveaxis(wide, 0, -1),
        tags={"TIFFTAG_DATETIME": "2019:01:02 00:00:00"},
    )
    provider = GeotiffProvider([str(path)], OPTIONS)
    (info,) = await provider.rasters()
    assert info.rule.scale_max is not None and "p98" in info.rule.description
    read = await provider.scan_image(tile, 18)
    expected = np.clip(np.rint(images[tile] * 257.0 * 255 / info.rule.scale_max), 0, 255)
    assert np.abs(read.image.astype(int) - expected.astype(int)).max() <= 1
    assert read.image.max() == 255  # the brightest 2 % saturate, as the rule says


@pytest.mark.stack
async def test_cog_from_minio_through_gdal_s3(stack_settings: Settings, cogs, images) -> None:
    from amberscan.common.blobstore import BlobStore

    store = BlobStore(stack_settings.s3)
    await store.ensure_bucket()
    await store.put_at("imagery/2017/block.tif", cogs["mercator"].read_bytes(), "image/tiff")
    bucket = stack_settings.s3.bucket
    key = provider_for(
        SourceSpec("geotiff", (f"s3://{bucket}/imagery/2017/block.tif",)), stack_settings
    )
    read = await key.scan_image(TILES[4], 18)
    assert np.array_equal(read.image, images[TILES[4]]) and read.imagery_date == "2017-05-01"
    # A prefix is listed through the blob store's client, so files added later are found.
    prefix = provider_for(SourceSpec("geotiff", (f"s3://{bucket}/imagery/",)), stack_settings)
    assert isinstance(prefix, GeotiffProvider)
    assert [r.href for r in await prefix.rasters()] == [f"s3://{bucket}/imagery/2017/block.tif"]
    missing = provider_for(
        SourceSpec("geotiff", (f"s3://{bucket}/imagery/nope.tif",)), stack_settings
    )
    with pytest.raises(SourceError, match="nope.tif: no such file"):
        await missing.scan_image(TILES[0], 18)


async def test_gdal_errors_are_classed_by_their_exact_words(tmp_path: Path) -> None:
    """#26 defect 3: any GDAL message with "SSL" or "timeout" in it was retried as transient. A
    TLS handshake with a server that speaks plain HTTP fails the same way every time (a source
    named with the wrong scheme): it is refused naming the file, not retried for ever."""
    async with served(file_server(tmp_path, Served())) as base:
        href = base.replace("http://", "https://") + "/cog.tif"
        with pytest.raises(SourceError, match=f"raster {href}: cannot open it.*SSL"):
            await GeotiffProvider([href], OPTIONS).rasters()
    closed = f"http://127.0.0.1:{free_port()}/cog.tif"  # nothing listens: a server down
    with pytest.raises(TransientError, match=f"raster {closed}: cannot read it now"):
        await GeotiffProvider([closed], OPTIONS).rasters()
