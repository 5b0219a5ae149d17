"""A scan tile as a grid of provider tiles: planning its children, stitching and splitting. Pure."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.errors import InvalidImage
from amberscan.geo.tiles import Tile
from amberscan.imagery import grid

SCAN = Tile(37659, 21852, 16)


def test_plan_children_is_the_4x4_grid_north_first() -> None:
    children = grid.plan_children(SCAN, 18)
    assert len(children) == 16
    assert children[0] == grid.Child(0, 0, Tile(SCAN.x * 4, SCAN.y * 4, 18))
    assert children[-1] == grid.Child(3, 3, Tile(SCAN.x * 4 + 3, SCAN.y * 4 + 3, 18))
    assert [c.col for c in children[:4]] == [0, 1, 2, 3]


@given(x=st.integers(0, (1 << 16) - 1), y=st.integers(0, (1 << 16) - 1), step=st.integers(0, 3))
def test_children_are_exactly_the_quadkey_descendants(x: int, y: int, step: int) -> None:
    scan = Tile(x, y, 16)
    children = grid.plan_children(scan, 16 + step)
    assert len({c.tile for c in children}) == 4**step
    assert all(c.tile.quadkey.startswith(scan.quadkey) for c in children)
    assert all(len(c.tile.quadkey) == 16 + step for c in children)


def test_plan_children_refuses_a_coarser_fetch_zoom() -> None:
    with pytest.raises(ValueError, match="coarser"):
        grid.plan_children(SCAN, 15)


@given(step=st.integers(0, 2), px=st.sampled_from([4, 8]), seed=st.integers(0, 2**32 - 1))
def test_stitch_inverts_split(step: int, px: int, seed: int) -> None:
    k = 1 << step
    image = np.random.default_rng(seed).integers(0, 256, (k * px, k * px, 3), dtype=np.uint8)
    children = grid.plan_children(SCAN, 16 + step)
    assert np.array_equal(grid.stitch(children, grid.split(image, k), tile_px=px), image)


def test_stitch_places_each_child_at_its_row_and_column() -> None:
    children = grid.plan_children(SCAN, 17)
    images = [np.full((2, 2, 3), i, dtype=np.uint8) for i in range(4)]
    out = grid.stitch(children, images, tile_px=2)
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
    children = grid.plan_children(SCAN, 18)
    images = [np.zeros((256, 256, 3), np.uint8) for _ in children]
    images[5] = bad
    child = children[5].tile
    with pytest.raises(InvalidImage, match=f"tile 18/{child.x}/{child.y}: expected a 256x256"):
        grid.stitch(children, images)


def test_stitch_refuses_an_incomplete_grid() -> None:
    children = grid.plan_children(SCAN, 18)[:15]
    with pytest.raises(ValueError, match="square grid"):
        grid.stitch(children, [np.zeros((256, 256, 3), np.uint8)] * 15)
