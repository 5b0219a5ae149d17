"""Tiler core: planning, stitching, the Tile message, skip and date decisions. Pure."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.common.errors import InvalidImage, PoisonMessage
from amberscan.geo.tiles import Tile
from amberscan.tiler import core
from amberscan.v1 import messages_pb2 as pb

SCAN = Tile(37659, 21852, 16)


def test_plan_children_is_the_4x4_grid_north_first() -> None:
    children = core.plan_children(SCAN, 18)
    assert len(children) == 16
    assert children[0] == core.Child(0, 0, Tile(SCAN.x * 4, SCAN.y * 4, 18))
    assert children[-1] == core.Child(3, 3, Tile(SCAN.x * 4 + 3, SCAN.y * 4 + 3, 18))
    assert [c.col for c in children[:4]] == [0, 1, 2, 3]


@given(x=st.integers(0, (1 << 16) - 1), y=st.integers(0, (1 << 16) - 1), step=st.integers(0, 3))
def test_children_are_exactly_the_quadkey_descendants(x: int, y: int, step: int) -> None:
    scan = Tile(x, y, 16)
    children = core.plan_children(scan, 16 + step)
    assert len({c.tile for c in children}) == 4**step
    assert all(c.tile.quadkey.startswith(scan.quadkey) for c in children)
    assert all(len(c.tile.quadkey) == 16 + step for c in children)


def test_plan_children_refuses_a_coarser_fetch_zoom() -> None:
    with pytest.raises(ValueError, match="coarser"):
        core.plan_children(SCAN, 15)


@given(step=st.integers(0, 2), px=st.sampled_from([4, 8]), seed=st.integers(0, 2**32 - 1))
def test_stitch_inverts_split(step: int, px: int, seed: int) -> None:
    k = 1 << step
    image = np.random.default_rng(seed).integers(0, 256, (k * px, k * px, 3), dtype=np.uint8)
    children = core.plan_children(SCAN, 16 + step)
    assert np.array_equal(core.stitch(children, core.split(image, k), tile_px=px), image)


def test_stitch_places_each_child_at_its_row_and_column() -> None:
    children = core.plan_children(SCAN, 17)
    images = [np.full((2, 2, 3), i, dtype=np.uint8) for i in range(4)]
    out = core.stitch(children, images, tile_px=2)
    assert out[0, 0, 0] == 0 and out[0, 2, 0] == 1 and out[2, 0, 0] == 2 and out[3, 3, 0] == 3


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((255, 256, 3), np.uint8),
        np.zeros((256, 256, 4), np.uint8),
        np.zeros((256, 256), np.uint8),
        np.zeros((256, 256, 3), np.uint16),
    ],
)
def test_stitch_names_the_child_with_the_wrong_size(bad: np.ndarray) -> None:
    children = core.plan_children(SCAN, 18)
    images = [np.zeros((256, 256, 3), np.uint8) for _ in children]
    images[5] = bad
    child = children[5].tile
    with pytest.raises(InvalidImage, match=f"tile 18/{child.x}/{child.y}: expected a 256x256"):
        core.stitch(children, images)


def test_stitch_refuses_an_incomplete_grid() -> None:
    children = core.plan_children(SCAN, 18)[:15]
    with pytest.raises(ValueError, match="square grid"):
        core.stitch(children, [np.zeros((256, 256, 3), np.uint8)] * 15)


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


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2015-06-01", "2015-06-01"),
        ("31 Dec 2012", "2012-12-31"),
        ("2014-10-11T00:00:00Z", "2014-10-11"),
        ("", ""),
        ("soon", ""),
    ],
)
def test_normalize_date(text: str, iso: str) -> None:
    assert core.normalize_date(text) == iso


def test_dates() -> None:
    assert core.latest_date(["2014-01-01", "", "2015-02-03"]) == "2015-02-03"
    assert core.latest_date(["", ""]) == ""
    assert core.date_in_range("2015-06-01", "2015-01-01", "2015-12-31")
    assert not core.date_in_range("2015-06-01", "2016-01-01", "")
    assert not core.date_in_range("2015-06-01", "", "2015-05-31")
    assert core.date_in_range("", "2016-01-01", "")


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
