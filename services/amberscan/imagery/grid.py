"""A scan tile as a grid of provider tiles: which provider tiles make it, and stitching them.

Pure: Tile values and numpy arrays in and out; no I/O. A scan tile is one zoom-16 web-mercator
tile fetched as its 4×4 zoom-18 children of 256 px, stitched north-first into one 1024×1024 RGB
image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from amberscan.errors import InvalidImage
from amberscan.geo.tiles import PROVIDER_TILE_PX, Tile, iter_rows


@dataclass(frozen=True)
class Child:
    """One provider tile of a scan tile and its place (row north first, column west first)."""

    row: int
    col: int
    tile: Tile


def plan_children(scan_tile: Tile, fetch_zoom: int) -> list[Child]:
    """The provider tiles of `scan_tile` at `fetch_zoom`, row by row from the north-west corner.

    Raises:
        ValueError: if `fetch_zoom` is coarser than the scan tile's zoom.
    """
    return [Child(r, c, t) for r, c, t in iter_rows(scan_tile, fetch_zoom)]


def stitch(
    children: Sequence[Child],
    images: Sequence[NDArray[np.uint8]],
    tile_px: int = PROVIDER_TILE_PX,
) -> NDArray[np.uint8]:
    """Stitch provider tile images into one scan tile image.

    Args:
        children: The plan, from `plan_children` (a complete k×k grid).
        images: One (tile_px, tile_px, 3) uint8 array per child, in the same order.
        tile_px: Side of a provider tile in pixels.

    Returns:
        A (k·tile_px, k·tile_px, 3) uint8 array.

    Raises:
        InvalidImage: a child image has the wrong shape or dtype (the message names its z/x/y).
        ValueError: the plan is not a complete square grid, or images do not match it.
    """
    if len(children) != len(images):
        raise ValueError(f"stitch: {len(children)} children but {len(images)} images")
    k = int(round(len(children) ** 0.5))
    places = {(c.row, c.col) for c in children}
    if k * k != len(children) or places != {(r, c) for r in range(k) for c in range(k)}:
        raise ValueError(f"stitch: {len(children)} children do not form a complete square grid")
    out = np.empty((k * tile_px, k * tile_px, 3), dtype=np.uint8)
    for child, image in zip(children, images, strict=True):
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.shape != (tile_px, tile_px, 3):
            raise InvalidImage(
                f"tile {child.tile}: expected a {tile_px}x{tile_px} RGB uint8 image, "
                f"got {array.dtype} {array.shape}"
            )
        r0, c0 = child.row * tile_px, child.col * tile_px
        out[r0 : r0 + tile_px, c0 : c0 + tile_px] = array
    return out


def split(image: NDArray[np.uint8], k: int) -> list[NDArray[np.uint8]]:
    """The k×k provider-tile blocks of a square image, row by row (the inverse of `stitch`)."""
    side = image.shape[0] // k
    return [
        image[r * side : (r + 1) * side, c * side : (c + 1) * side]
        for r in range(k)
        for c in range(k)
    ]
