"""Tiler core: planning, splitting a region request, the Tile message, the skip decision. Pure."""

from __future__ import annotations

import pytest

from amberscan.errors import PoisonMessage
from amberscan.geo.tiles import Tile
from amberscan.tiler import core
from amberscan.v1 import messages_pb2 as pb

SCAN = Tile(37659, 21852, 16)


def test_tile_message_carries_every_field() -> None:
    m = core.tile_message(
        SCAN,
        scan_id="s1",
        provider="demo",
        imagery_date="2015-06-01",
        image_key="tiles/ab/ab.png",
        width=1024,
        height=1024,
        tiles_expected=8,
        demo=True,
    )
    assert m.tile_id == SCAN.quadkey
    assert (m.tile.z, m.tile.x, m.tile.y, m.tile.quadkey) == (16, SCAN.x, SCAN.y, SCAN.quadkey)
    assert (m.scan_id, m.provider, m.imagery_date, m.image_key) == (
        "s1",
        "demo",
        "2015-06-01",
        "tiles/ab/ab.png",
    )
    assert (m.width, m.height, m.tiles_expected, m.demo) == (1024, 1024, 8, True)


@pytest.mark.parametrize(
    ("scanned", "date", "model", "rescan", "skip"),
    [
        ([("2015-06-01", "m1")], "2015-06-01", "m1", False, True),
        ([("2015-06-01", "m1")], "2015-06-01", "m1", True, False),  # rescan overrides
        ([("2015-06-01", "m1")], "2016-01-01", "m1", False, False),  # newer imagery
        ([("2015-06-01", "m1")], "2015-06-01", "m2", False, False),  # newer model
        ([("", "m1")], "", "m1", False, False),  # unknown date never skips
        ([], "2015-06-01", "m1", False, False),
    ],
)
def test_should_skip(scanned, date: str, model: str, rescan: bool, skip: bool) -> None:
    assert core.should_skip(scanned, date, model, rescan) is skip


def request(**fields) -> pb.ScanRequest:
    r = pb.ScanRequest(scan_id="s1", **fields)
    if "geojson" not in fields:
        r.bbox.CopyFrom(pb.BoundingBox(west=26.87, south=51.29, east=26.89, north=51.30))
    return r


def test_plan_scan_uses_default_zooms_and_provider() -> None:
    plan = core.plan_scan(request(), "demo")
    assert (plan.zoom, plan.fetch_zoom, plan.provider) == (16, 18, "demo")
    assert plan.tiles and all(t.z == 16 for t in plan.tiles)
    assert list(plan.tiles) == sorted(plan.tiles, key=lambda t: t.quadkey)


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (pb.ScanRequest(), "without scan_id"),
        (request(zoom=16, fetch_zoom=15), "fetch zoom 15"),
        (request(zoom=12, fetch_zoom=18), "fetch zoom 18"),
        (pb.ScanRequest(scan_id="s1"), "no bbox and no GeoJSON"),
        (request(geojson='{"type": "Point", "coordinates": [1, 2]}'), "only Polygon"),
        (
            pb.ScanRequest(scan_id="s1", bbox=pb.BoundingBox(west=10, south=40, east=30, north=60)),
            "more than the limit",
        ),
    ],
)
def test_plan_scan_refuses_bad_requests_naming_the_scan(req: pb.ScanRequest, message: str) -> None:
    with pytest.raises(PoisonMessage, match=message):
        core.plan_scan(req, "xyz", max_tiles=1000)


def test_one_tile_request_plans_that_tile_with_the_scans_count() -> None:
    from amberscan.tiler.core import plan_scan

    request = pb.ScanRequest(
        scan_id="s", tile=pb.TileCoord(z=16, x=37659, y=21852), tiles_expected=8
    )
    plan = plan_scan(request, "xyz")
    assert plan.single and plan.tiles == (Tile(37659, 21852, 16),) and plan.tiles_expected == 8
    request.tile.z = 17
    with pytest.raises(PoisonMessage, match="not at the scan zoom 16"):
        plan_scan(request, "xyz")
