"""The imagery layer's pure parts: which stored scan tiles a map tile needs, and its drawing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from amberscan.geo.tiles import Tile
from amberscan.vision.imageio import encode_png, encode_tile
from amberscan.web import imagery
from amberscan.web.core import BadRequest
from amberscan.web.imagery import MAX_SOURCES, Source, overlaps, sources_for

SCAN = Tile(37626, 22003, 16)


def source(tile: Tile, date: str = "2016-05-04", key: str = "") -> Source:
    return Source(key or f"tiles/{tile}/{date}", tile, date)


@pytest.mark.parametrize(
    ("map_tile", "expected"),
    [
        (SCAN, True),
        (Tile(37626 >> 2, 22003 >> 2, 14), True),  # an ancestor
        (Tile(37626 * 4 + 3, 22003 * 4, 18), True),  # a descendant
        (Tile(37627, 22003, 16), False),  # the neighbour: they share an edge, no area
        (Tile((37626 >> 2) + 1, 22003 >> 2, 14), False),  # the ancestor's neighbour
        (Tile(37627 * 4, 22003 * 4, 18), False),  # a descendant of the neighbour, touching
    ],
)
def test_overlaps(map_tile: Tile, expected: bool) -> None:
    assert overlaps(SCAN, map_tile) is expected


@given(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1), st.integers(0, 16), st.integers(0, 4))
def test_a_scan_tile_overlaps_exactly_its_ancestors_and_descendants(
    x: int, y: int, up: int, down: int
) -> None:
    scan = Tile(x, y, 16)
    ancestor = Tile(x >> up, y >> up, 16 - up)
    assert overlaps(scan, ancestor)
    for dx, dy in ((0, 0), ((1 << down) - 1, (1 << down) - 1)):
        assert overlaps(scan, Tile((x << down) + dx, (y << down) + dy, 16 + down))
    if x + 1 < 2**16:  # the next column's tiles at every zoom: never
        assert not overlaps(scan, Tile((x + 1) << down, y << down, 16 + down))


def test_sources_for_keeps_the_newest_image_of_each_overlapping_scan_tile() -> None:
    map_tile = Tile(37626 >> 1, 22003 >> 1, 15)  # 4 scan tiles: (37626..37627, 22002..22003)
    inside = [Tile(37626, 22002, 16), Tile(37627, 22003, 16), SCAN]
    touching = Tile(37628, 22003, 16)
    candidates = [
        source(inside[0], "2014-10-11"),
        source(inside[0], "2016-04-20"),  # the same place's newer vintage
        source(inside[1], "2015-06-02"),
        source(SCAN, ""),  # undated imagery
        source(touching, "2017-01-01"),
    ]
    chosen = sources_for(map_tile, candidates)
    assert [(s.tile, s.imagery_date) for s in chosen] == [
        (inside[0], "2016-04-20"),
        (inside[1], "2015-06-02"),
        (SCAN, ""),
    ]
    assert sources_for(map_tile, reversed(candidates)) == chosen  # order given does not matter
    assert sources_for(Tile(0, 0, 16), candidates) == []


def test_sources_for_refuses_more_than_it_draws() -> None:
    map_tile = Tile(37626 >> 3, 22003 >> 3, 13)  # 64 zoom-16 scan tiles
    base_x, base_y = map_tile.x << 3, map_tile.y << 3
    many = [source(Tile(base_x + i % 8, base_y + i // 8, 16)) for i in range(MAX_SOURCES + 1)]
    with pytest.raises(imagery.TooManySources, match="zoom in"):
        sources_for(map_tile, many)
    assert len(sources_for(map_tile, many[:MAX_SOURCES])) == MAX_SOURCES


@pytest.mark.parametrize(
    ("vintage", "prefix"),
    [("", ""), ("2016", "2016"), ("2016-05", "2016-05"), ("2016-05-04", "2016-05-04")],
)
def test_vintage_prefix(vintage: str, prefix: str) -> None:
    assert imagery.vintage_prefix(vintage) == prefix


def test_vintage_prefix_unknown_and_refusals() -> None:
    assert imagery.vintage_prefix("unknown") is None
    for bad in ("16", "2016-5", "2016%", "x' OR 1=1"):
        with pytest.raises(BadRequest, match="vintage"):
            imagery.vintage_prefix(bad)


def test_etag_names_the_images() -> None:
    one, two = source(SCAN, key="tiles/a"), source(SCAN, key="tiles/b")
    assert imagery.etag(SCAN, [one]) == imagery.etag(SCAN, [one])
    assert imagery.etag(SCAN, [one]) != imagery.etag(SCAN, [two])
    assert imagery.etag(SCAN, [one]) != imagery.etag(Tile(1, 1, 16), [one])


def _gradient(height: int = 512, width: int = 512) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack(
        [rows * 255 // height, cols * 255 // width, np.full_like(rows, 90)], axis=2
    ).astype(np.uint8)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


@pytest.mark.parametrize("stored_as", ["geotiff", "png"])
def test_render_places_the_scan_tile(stored_as: str) -> None:
    """At the scan tile itself: the image, opaque; a quarter of its parent: the image, the rest
    transparent; a child: that quarter of the image, enlarged."""
    image = _gradient()
    data = encode_tile(image, SCAN.xy_bounds()) if stored_as == "geotiff" else encode_png(image)
    images = [(source(SCAN), data)]

    whole = _png(imagery.render(SCAN, images))
    assert whole.shape == (256, 256, 4) and whole[..., 3].min() == 255
    assert np.abs(whole[..., :3].astype(int) - image[::2, ::2].astype(int)).mean() < 3

    parent = _png(imagery.render(Tile(SCAN.x >> 1, SCAN.y >> 1, 15), images))
    # 37626 is even (west half), 22003 odd (south half): the lower left quarter.
    assert parent[128:, :128, 3].min() == 255 and parent[:128, :, 3].max() == 0
    assert parent[128:, 128:, 3].max() == 0
    assert np.abs(parent[128:, :128, :3].astype(int) - image[::4, ::4].astype(int)).mean() < 3

    child = _png(imagery.render(Tile(SCAN.x * 2 + 1, SCAN.y * 2, 17), images))  # upper right
    assert child[..., 3].min() == 255
    assert np.abs(child[..., :3].astype(int) - image[:256, 256:].astype(int)).mean() < 3


def test_render_draws_the_first_image_over_the_next() -> None:
    red = np.zeros((256, 256, 3), np.uint8)
    red[..., 0] = 200
    blue = np.zeros((256, 256, 3), np.uint8)
    blue[..., 2] = 200
    newer = (source(SCAN, "2017"), encode_tile(red, SCAN.xy_bounds()))
    older = (source(SCAN, "2014"), encode_tile(blue, SCAN.xy_bounds()))
    drawn = _png(imagery.render(SCAN, [newer, older]))
    assert (drawn[..., 0] == 200).all() and (drawn[..., 2] == 0).all()


def test_blank_is_a_transparent_tile() -> None:
    blank = _png(imagery.blank())
    assert blank.shape == (256, 256, 4) and blank.max() == 0
