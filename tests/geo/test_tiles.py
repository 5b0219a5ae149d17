"""Tile maths properties (mercantile's round trips are the model)."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.errors import InvalidRegion
from amberscan.geo.tiles import (
    Tile,
    ground_resolution_m,
    parse_bbox,
    parse_geojson,
    pixel_area_m2,
    pixel_to_lonlat,
    tiles_for_region,
)

zooms = st.integers(min_value=0, max_value=22)


@st.composite
def tiles(draw):  # type: ignore[no-untyped-def]
    z = draw(zooms)
    return Tile(draw(st.integers(0, (1 << z) - 1)), draw(st.integers(0, (1 << z) - 1)), z)


@given(tiles())
def test_quadkey_round_trip(tile: Tile) -> None:
    assert Tile.from_quadkey(tile.quadkey) == tile if tile.z else True


@given(tiles())
def test_bounds_then_tile_is_the_tile(tile: Tile) -> None:
    west, south, east, north = tile.bounds()
    inner = tiles_for_region(
        (
            west + (east - west) * 0.25,
            south + (north - south) * 0.25,
            east - (east - west) * 0.25,
            north - (north - south) * 0.25,
        ),
        tile.z,
    )
    assert inner == [tile]


@given(tiles(), st.integers(0, 3))
def test_children_tile_the_parent(tile: Tile, depth: int) -> None:
    rows = tile.children_at(tile.z + depth)
    k = 1 << depth
    assert len(rows) == k and all(len(r) == k for r in rows)
    w, s, e, n = tile.bounds()
    nw = rows[0][0].bounds()
    se = rows[-1][-1].bounds()
    assert math.isclose(nw[0], w, abs_tol=1e-9) and math.isclose(nw[3], n, abs_tol=1e-9)
    assert math.isclose(se[2], e, abs_tol=1e-9) and math.isclose(se[1], s, abs_tol=1e-9)


def test_scan_tile_is_about_04_m_per_pixel_in_ukraine() -> None:
    # zoom 16 stitched from 4x4 zoom-18 tiles: 1024 px at ~51° N
    assert 0.35 < ground_resolution_m(51.0, 18) < 0.40
    tile = tiles_for_region((26.69, 50.78, 26.691, 50.781), 16)[0]
    assert math.isclose(
        pixel_area_m2(tile, 1024), ground_resolution_m(tile.center()[1], 18) ** 2, rel_tol=1e-6
    )


def test_pixel_corners_are_tile_corners() -> None:
    tile = Tile(38012, 22100, 16)
    w, s, e, n = tile.bounds()
    assert pixel_to_lonlat(tile, 1024, 1024, 0, 0) == pytest.approx((w, n))
    assert pixel_to_lonlat(tile, 1024, 1024, 1024, 1024) == pytest.approx((e, s))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("10,50,9,51", "west < east"),
        ("10,89,11,90", "south < north"),
        ("nan,1,2,3", "not finite"),
    ],
)
def test_bad_bbox_says_what(text: str, problem: str) -> None:
    with pytest.raises(InvalidRegion, match=problem):
        parse_bbox(text)


def test_region_too_large_fails_before_enumerating() -> None:
    with pytest.raises(InvalidRegion, match="more than the limit"):
        tiles_for_region((20.0, 45.0, 40.0, 55.0), 16, max_tiles=1000)


def test_polygon_selects_fewer_tiles_than_its_bbox() -> None:
    triangle = '{"type": "Polygon", "coordinates": [[[26.60, 50.70], [26.80, 50.70], [26.60, 50.85], [26.60, 50.70]]]}'
    shape = parse_geojson(triangle)
    in_polygon = tiles_for_region(shape, 14)
    in_bbox = tiles_for_region(shape.bounds, 14)
    assert set(in_polygon) < set(in_bbox)


def test_a_jagged_polygon_selects_the_tiles_it_touches() -> None:
    """The one prepared test of every tile (#26, defect 7) selects what a test of each does."""
    from shapely import geometry as sg

    angles = [2 * math.pi * i / 2000 for i in range(2000)]
    radius = [0.05 * (1 + 0.3 * math.sin(a * 23)) for a in angles]
    shape = sg.Polygon(
        [
            (26.7 + r * math.cos(a), 50.8 + r * math.sin(a))
            for a, r in zip(angles, radius, strict=True)
        ]
    )
    selected = tiles_for_region(shape, 16)
    each = [
        t for t in tiles_for_region(shape.bounds, 16) if shape.intersects(sg.shape(t.polygon()))
    ]
    assert selected == each and 0 < len(selected) < len(tiles_for_region(shape.bounds, 16))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not JSON"),
        ('{"type": "Point", "coordinates": [1, 2]}', "only Polygon"),
        (
            '{"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}',
            "self-intersecting",
        ),
    ],
)
def test_bad_geojson_says_what(text: str, problem: str) -> None:
    with pytest.raises(InvalidRegion, match=problem):
        parse_geojson(text)


def test_invalid_tile_rejected() -> None:
    with pytest.raises(ValueError, match="outside the zoom-2 grid"):
        Tile(4, 0, 2)
