"""Aggregator core: joining scores, the rule, the area and the polygons. No servers."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import shape

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


@settings(max_examples=30)
@given(st.integers(3, 30), st.integers(3, 30), st.integers(0, 10), st.integers(0, 10))
def test_mask_polygon_area_matches_pixels(h: int, w: int, r0: int, c0: int) -> None:
    mask = np.zeros((h, w), dtype=bool)
    mask[1:, 1:] = True
    polygon = mask_polygon(mask, r0, c0)
    assert polygon.area == pytest.approx(mask.sum(), rel=0.05)
    minx, miny, maxx, maxy = polygon.bounds
    assert minx >= c0 and miny >= r0 and maxx <= c0 + w and maxy <= r0 + h
