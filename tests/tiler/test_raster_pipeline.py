"""GeoTIFF, STAC and WMTS scans through the whole pipeline on the real stack (as
tests/pipeline/test_demo_scan.py runs the demo scan): each ends with the demo provider's verdicts
for the same pixels.

The sources hold the demo tiles' pixels at other capture dates (GeoTIFF 2017, STAC 2018, WMTS
2019 and 2020), so each scan is new imagery (nothing skipped) and its detections sit beside the
demo's. The reference is the demo scan run in the same test, so the comparison holds for any
model build and segmentation mode: the fast mode keeps the test's CPU cost down (8 + 8 + 8 + 4
tiles).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amberscan import scanning
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.tiler import demo
from amberscan.v1 import messages_pb2 as pb
from tests.imagery.rasters import (
    Catalogue,
    Served,
    WmtsServer,
    file_server,
    mercator_block_cog,
    served_in_thread,
    wmts_app,
)
from tests.pipeline import test_demo_scan as demo_scan

pytestmark = [pytest.mark.stack, pytest.mark.timeout(1800)]
pipeline = demo_scan.pipeline  # the fixture running every stage on the stack, reused


@pytest.fixture
def stack_settings(stack_settings: Settings) -> Settings:
    """The stack's settings (see the docstring) with the fast segmentation mode; the pipeline
    fixture of tests/pipeline runs every stage with them."""
    return replace(stack_settings, segmenter={"mode": "fast"})


async def scan(settings: Settings, request: pb.ScanRequest) -> list[scanning.ScanSummary]:
    """What `amberscan scan` does: prepare (sources checked, region filled), submit, follow."""
    out = []
    async with Database(settings.database) as db:
        for one in await scanning.prepare(settings, request):
            expected = await scanning.submit(settings, db, one)
            out.append(
                await scanning.follow(db, one.scan_id, expected, timeout_s=600, progress=False)
            )
    return out


async def detections(settings: Settings, date: str) -> dict[str, tuple[bool, int, list[float]]]:
    async with Database(settings.database) as db:
        rows = await db.fetch(
            "SELECT tile_id, flagged, positives, scores FROM detections WHERE imagery_date = %s",
            date,
        )
    return {r[0]: (bool(r[1]), int(r[2]), list(r[3])) for r in rows}


def verdicts(summary: scanning.ScanSummary) -> dict[str, tuple[str, bool, float]]:
    return {v["tile_id"]: (v["status"], v["flagged"], v["hectares"]) for v in summary.verdicts}


def assert_same(got: dict, want: dict, what: str) -> None:
    assert set(got) == set(want), what
    for tile_id, (flagged, positives, scores) in want.items():
        g_flagged, g_positives, g_scores = got[tile_id]
        assert (g_flagged, g_positives) == (flagged, positives), (what, tile_id)
        np.testing.assert_allclose(g_scores, scores, atol=1e-4, err_msg=f"{what} {tile_id}")


async def test_geotiff_stac_and_wmts_scans_give_the_demo_verdicts(
    pipeline: Settings, shared_data: Path, tmp_path: Path
) -> None:
    settings = pipeline
    quadkeys = {t.quadkey for t in demo.demo_tiles()}

    (reference,) = await scan(settings, demo.demo_scan_request())
    assert (reference.done, reference.failed) == (8, 0), reference
    want = await detections(settings, demo.DEMO_IMAGERY_DATE)
    assert set(want) == quadkeys

    # GeoTIFF: one COG of the block over HTTP, no region given (its footprint is scanned).
    cog = mercator_block_cog(tmp_path / "block.tif", shared_data / "tiles", "2017:05:01 10:00:00")
    with served_in_thread(lambda: file_server(tmp_path, Served())) as base:
        request = pb.ScanRequest(provider="geotiff", sources=[f"{base}/{cog.name}"])
        (geotiff,) = await scan(settings, request)
        assert json.loads(request.geojson)["type"] in ("Polygon", "MultiPolygon")
        assert (geotiff.tiles, geotiff.done, geotiff.failed) == (8, 8, 0), geotiff
        assert_same(await detections(settings, "2017-05-01"), want, "geotiff")
        assert {k: v[1:] for k, v in verdicts(geotiff).items()} == {
            k: v[1:] for k, v in verdicts(reference).items()
        }

        # STAC: a static catalogue of one item per scan tile, over HTTP.
        images = demo.demo_images(shared_data / "tiles")
        catalogue = Catalogue(tmp_path, base, images)
        url = catalogue.write([catalogue.item(t, "2018-05-01") for t in demo.demo_tiles()])
        (stac,) = await scan(settings, pb.ScanRequest(provider="stac", sources=[url]))
        assert (stac.tiles, stac.done, stac.failed) == (8, 8, 0), stac
        assert_same(await detections(settings, "2018-05-01"), want, "stac")

    # WMTS: two Time values, one pass per vintage, over two tiles (a mining one and another).
    state = WmtsServer(times=["2019-05-01", "2020-05-01"])
    pair = [d.tile for d in demo.demo_layout()][:2]
    with served_in_thread(lambda: wmts_app(shared_data / "tiles", state)) as base:
        w, s = pair[0].bounds()[0] + 1e-6, pair[0].bounds()[1] + 1e-6
        e, n = pair[1].bounds()[2] - 1e-6, pair[1].bounds()[3] - 1e-6
        request = pb.ScanRequest(
            provider="wmts",
            sources=[f"{base}/wmts/capabilities.xml"],
            layers=["ortho"],
            vintage=scanning.ALL_VINTAGES,
            bbox=pb.BoundingBox(west=w, south=s, east=e, north=n),
        )
        passes = await scan(settings, request)
    assert [p.tiles for p in passes] == [2, 2] and all(p.done == 2 for p in passes), passes
    assert len({p.scan_id for p in passes}) == 2  # one scan per vintage
    pair_want = {t.quadkey: want[t.quadkey] for t in pair}
    for date in state.times:
        assert_same(await detections(settings, date), pair_want, f"wmts {date}")
