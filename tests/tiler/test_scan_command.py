"""`amberscan scan` with raster, STAC and WMTS sources: what is checked and filled in before
anything is submitted (no stack needed: bad sources fail first)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shapely import geometry as sg

from amberscan import cli, scanning
from amberscan.cli import options
from amberscan.common.settings import Settings
from amberscan.imagery.providers import PROVIDERS, SourceError
from amberscan.tiler import demo
from amberscan.v1 import messages_pb2 as pb
from tests.imagery.rasters import WmtsServer, tile_cog, wmts_app
from tests.sources import MISSING, local_sources
from tests.streams import served


def test_cli_names_every_provider() -> None:
    assert options.PROVIDERS == PROVIDERS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", f"{MISSING}/ortho.tif"], f"raster {MISSING}/ortho.tif: no such file"),
        ([], "provider 'geotiff' needs at least one source"),
    ],
)
def test_bad_geotiff_scan_is_refused_before_submitting(
    argv: list[str], message: str, capsys
) -> None:
    assert cli.main(["scan", "--provider", "geotiff", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amberscan: error: ") and message in err


def test_tile_provider_needs_a_region(capsys) -> None:
    assert cli.main(["scan", "--provider", "demo"]) == 2
    assert "give a region (--bbox or --geojson)" in capsys.readouterr().err


async def test_region_defaults_to_the_footprints(tmp_path: Path, shared_data: Path) -> None:
    images = demo.demo_images(shared_data / "tiles")
    tiles = demo.demo_tiles()[:3]
    for i, tile in enumerate(tiles):
        tile_cog(
            tmp_path / f"{i}.tif",
            tile,
            images[tile],
            tags={"TIFFTAG_DATETIME": f"201{i}:06:01 00:00:00"},
        )
    request = pb.ScanRequest(provider="geotiff", sources=[str(tmp_path)])
    (prepared,) = await scanning.prepare(local_sources(Settings()), request)
    region = sg.shape(json.loads(prepared.geojson))
    assert region.area == pytest.approx(sum(sg.box(*t.bounds()).area for t in tiles), rel=1e-3)
    # Exactly the three tiles, not their neighbours that only touch the footprints.
    assert {t.quadkey for t in scanning.region_tiles(prepared)} == {t.quadkey for t in tiles}
    request.vintage = scanning.ALL_VINTAGES
    passes = await scanning.prepare(local_sources(Settings()), request)
    assert [p.vintage for p in passes] == ["2010-06-01", "2011-06-01", "2012-06-01"]
    assert len({p.scan_id for p in passes}) == 3


async def test_wmts_vintages_all(shared_data: Path) -> None:
    state = WmtsServer(times=["2014-06-01", "2019-05-01"])
    async with served(wmts_app(shared_data / "tiles", state)) as base:
        w, s, e, n = demo.demo_bbox()
        request = pb.ScanRequest(
            provider="wmts",
            sources=[f"{base}/wmts/capabilities.xml"],
            layers=["ortho-1992"],
            bbox=pb.BoundingBox(west=w, south=s, east=e, north=n),
        )
        with pytest.raises(SourceError, match="no Web Mercator TileMatrixSet"):
            await scanning.prepare(local_sources(Settings()), request)
        request.layers[:] = ["ortho"]
        request.vintage = scanning.ALL_VINTAGES
        passes = await scanning.prepare(local_sources(Settings()), request)
    assert [p.vintage for p in passes] == state.times
