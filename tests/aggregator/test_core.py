"""Aggregator core: joining scores, the rule, the area and the polygons. No servers."""

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi
from shapely import geometry as sg
from shapely.geometry import shape
from shapely.ops import unary_union

from amberscan.aggregator.core import TileJoin, build_detection, mask_polygon
from amberscan.geo.tiles import Tile, pixel_area_m2
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.segment import encode_rle

TILE = Tile(38012, 22100, 16)
SIZE = 64


def scores_for(
    values: list[float], threshold: float = 0.5, scan: str = "s1", tile: Tile = TILE
) -> list[pb.SuperpixelScore]:
    """A 64×64 tile split into len(values) vertical stripes, one superpixel each."""
    n = len(values)
    edges = np.linspace(0, SIZE, n + 1).astype(int)
    out = []
    for i, value in enumerate(values):
        c0, c1 = int(edges[i]), int(edges[i + 1])
        mask = np.ones((SIZE, c1 - c0), dtype=bool)
        ref = pb.SuperpixelRef(
            tile_id=tile.quadkey,
            scan_id=scan,
            tile=pb.TileCoord(z=tile.z, x=tile.x, y=tile.y, quadkey=tile.quadkey),
            image_width=SIZE,
            image_height=SIZE,
            segment_index=i,
            segment_count=n,
            bbox=pb.PixelBox(row0=0, col0=c0, row1=SIZE, col1=c1),
            area_px=int(mask.sum()),
            mask_rle=encode_rle(mask),
            imagery_date="2015-10-05",
        )
        out.append(
            pb.SuperpixelScore(
                ref=ref,
                score=value,
                positive=value >= threshold,
                threshold=threshold,
                models=pb.ModelVersions(classifier="m1", backbone="b1"),
            )
        )
    return out


@given(st.permutations(list(range(6))))
def test_detection_once_all_scores_arrived_in_any_order(order: list[int]) -> None:
    scores = scores_for([0.9, 0.1, 0.8, 0.7, 0.2, 0.3])
    join = TileJoin(min_positives=2, max_open=10, stale_s=60)
    results = [join.add(scores[i], 0, 100 + k, now=0.0).detection for k, i in enumerate(order)]
    assert all(r is None for r in results[:-1])
    detection = results[-1]
    assert detection is not None and detection.flagged and detection.positives == 3
    assert list(detection.scores) == pytest.approx([0.9, 0.1, 0.8, 0.7, 0.2, 0.3])
    assert not join.open


def test_area_is_sum_of_positive_superpixels() -> None:
    scores = scores_for([0.9, 0.1, 0.8, 0.7])
    detection = build_detection(scores, min_positives=2)
    expected = sum(s.ref.area_px for s in scores if s.positive) * pixel_area_m2(TILE, SIZE) / 10_000
    assert detection.hectares == pytest.approx(expected)
    # the positive polygons lie in the tile and cover about the same ground
    tile_shape = shape(json.loads(detection.tile_geojson))
    positives = shape(json.loads(detection.positives_geojson))
    assert tile_shape.buffer(1e-9).contains(positives)
    assert positives.area == pytest.approx(tile_shape.area * 3 / 4, rel=0.05)


def test_damage_is_reported_only_where_the_rule_fires() -> None:
    detection = build_detection(scores_for([0.1, 0.2, 0.9]), min_positives=2)
    assert not detection.flagged and detection.positives == 1
    # The positive superpixel is kept in the scores, but an unflagged tile has no damaged area.
    assert detection.hectares == 0 and detection.positives_geojson == ""
    assert list(detection.scores) == pytest.approx([0.1, 0.2, 0.9])
    flagged = build_detection(scores_for([0.1, 0.2, 0.9]), min_positives=0)
    assert flagged.flagged and flagged.hectares > 0 and flagged.positives_geojson
    none = build_detection(scores_for([0.1, 0.2, 0.3]), min_positives=2)
    assert none.hectares == 0 and none.positives_geojson == ""


def test_commit_never_passes_an_open_tile() -> None:
    join = TileJoin(min_positives=2, max_open=10, stale_s=60)
    a = scores_for([0.9, 0.9], scan="a")
    b = scores_for([0.1, 0.1], scan="b")
    join.add(a[0], 0, 10, 0.0)
    join.add(b[0], 0, 11, 0.0)
    assert join.safe_offset(0, 12) == 10
    assert join.add(a[1], 0, 12, 0.0).detection is not None
    assert join.safe_offset(0, 13) == 11  # b still open
    assert join.safe_offset(1, 5) == 5  # other partition unaffected
    assert join.add(b[1], 0, 13, 0.0).detection is not None
    assert join.safe_offset(0, 14) == 14


def test_redelivered_score_does_not_complete_a_tile_twice() -> None:
    join = TileJoin(min_positives=2, max_open=10, stale_s=60)
    s = scores_for([0.9, 0.9, 0.9])
    join.add(s[0], 0, 1, 0.0)
    assert join.add(s[0], 0, 2, 0.0).detection is None  # duplicate of segment 0
    join.add(s[1], 0, 3, 0.0)
    assert join.add(s[2], 0, 4, 0.0).detection is not None


def test_state_is_bounded_and_a_tile_pushed_out_is_reported() -> None:
    join = TileJoin(min_positives=2, max_open=2, stale_s=10)
    added = [join.add(scores_for([0.5, 0.5], scan=s)[0], 0, k, now=k) for k, s in enumerate("abc")]
    assert len(join.open) == 2 and join.dropped == 1
    [dropped] = added[-1].dropped
    assert (dropped.tile_id, dropped.scan_id, dropped.cause) == (TILE.quadkey, "a", "overflow")
    assert (dropped.partition, dropped.offset, dropped.received, dropped.expected) == (0, 0, 1, 2)
    assert "MAX_OPEN_TILES" in dropped.reason and "1 of 2" in dropped.reason
    assert join.safe_offset(0, 50) == 1  # a's first score no longer holds the commit


def pixel_squares(mask: np.ndarray, r0: int, c0: int) -> sg.base.BaseGeometry:
    """The union of the mask's pixels as unit squares: exact, one square at a time."""
    rows, cols = np.nonzero(mask)
    return unary_union(
        [sg.box(c0 + c, r0 + r, c0 + c + 1, r0 + r + 1) for r, c in zip(rows, cols, strict=True)]
    )


def pieces_and_holes(shape: sg.base.BaseGeometry) -> tuple[int, int]:
    polygons = list(getattr(shape, "geoms", [shape]))
    return len(polygons), sum(len(p.interiors) for p in polygons)


def vertices(shape: sg.base.BaseGeometry) -> list[tuple[float, float]]:
    rings = [r for p in getattr(shape, "geoms", [shape]) for r in (p.exterior, *p.interiors)]
    return [xy for ring in rings for xy in ring.coords[:-1]]


noise_masks = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(
    lambda hw: arrays(np.bool_, hw)
)


@st.composite
def rectangle_masks(draw: st.DrawFn) -> np.ndarray:
    """Unions of a few rectangles: blobs with straight runs, notches and holes."""
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(draw(st.integers(1, 6))):
        r0, c0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        r1, c1 = draw(st.integers(r0 + 1, h)), draw(st.integers(c0 + 1, w))
        mask[r0:r1, c0:c1] = draw(st.booleans()) or not mask.any()
    return mask


@settings(max_examples=200, deadline=None)
@given(st.one_of(noise_masks, rectangle_masks()), st.integers(0, 10), st.integers(0, 10))
def test_mask_polygon_is_the_mask_up_to_the_documented_thinning(
    mask: np.ndarray, r0: int, c0: int
) -> None:
    assume(mask.any())
    polygon = mask_polygon(mask, r0, c0)
    squares = pixel_squares(mask, r0, c0)
    assert polygon.is_valid
    # The same pieces as the pixels (4-connected: pixels meeting at a corner stay apart) and the
    # same holes as the union of their squares: thinning never changes the topology.
    assert pieces_and_holes(polygon)[0] == ndi.label(mask)[1]
    assert pieces_and_holes(polygon) == pieces_and_holes(squares)
    # Thinning only drops vertices: the rest are pixel corners inside the mask's box, so the
    # area is a multiple of half a pixel.
    corners = vertices(polygon)
    assert all(x == int(x) and y == int(y) for x, y in corners)
    assert all(c0 <= x <= c0 + mask.shape[1] and r0 <= y <= r0 + mask.shape[0] for x, y in corners)
    assert (2 * polygon.area) == int(2 * polygon.area)
    # The documented bound: the area is the pixel count, changed by less than 1 px per edge.
    assert abs(polygon.area - mask.sum()) < len(corners)


@pytest.mark.parametrize(
    "rows",
    [
        ["###", "###"],  # a rectangle
        ["#..", "#..", "###"],  # an L
        ["####", "#..#", "####"],  # a ring round a hole
        ["##..", "##..", "..##"],  # two pieces meeting at a corner
    ],
)
def test_mask_polygon_without_staircases_is_exact(rows: list[str]) -> None:
    mask = np.array([[ch == "#" for ch in row] for row in rows])
    polygon = mask_polygon(mask, 2, 3)
    assert polygon.area == mask.sum()
    squares = pixel_squares(mask, 2, 3)
    assert polygon.symmetric_difference(squares).area == 0


def test_empty_mask_has_an_empty_polygon() -> None:
    assert mask_polygon(np.zeros((3, 4), dtype=bool), 0, 0).is_empty
