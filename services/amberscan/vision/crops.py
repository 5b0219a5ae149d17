"""The CNN's view of a superpixel (its box cropped and resized), and its outline as a polygon.

The 2018 pipeline cropped each superpixel's bounding box from the tile, unmasked, and resized it
to 224x224 with nearest-neighbour sampling: at detection time explicitly
(``crop.resize((224, 224), Image.NEAREST)`` in step3.ipynb), and for training through
``keras.preprocessing.image.load_img(path, target_size=(224, 224))``, whose default
interpolation is ``"nearest"``. The classifier learnt features of such crops, so the same
resampling is used here, for training crops and tiles alike. Pillow's NEAREST gives the same
pixels today as Pillow 5.2 did in 2018 (checked on 100 crops of the shared tiles).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from skimage.measure import approximate_polygon, find_contours

from amberscan.vision.segment import Segmentation

CROP_SIZE = 224
_RESAMPLE = Image.Resampling.NEAREST

Ring = list[tuple[float, float]]


def crop_superpixel(
    image: NDArray[np.uint8], bbox: tuple[int, int, int, int], size: int = CROP_SIZE
) -> NDArray[np.uint8]:
    """The image inside `bbox`, resized to size x size as the 2018 pipeline did.

    Args:
        image: (H, W, 3) uint8 RGB tile.
        bbox: (row0, col0, row1, col1), half-open, inside the image and not empty.
        size: Side of the square output.

    Returns:
        (size, size, 3) uint8.

    Raises:
        ValueError: The image is not (H, W, 3) uint8, or the box is empty or outside it.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"crop needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    row0, col0, row1, col1 = (int(v) for v in bbox)
    height, width = image.shape[:2]
    if not (0 <= row0 < row1 <= height and 0 <= col0 < col1 <= width):
        raise ValueError(f"bbox {bbox} is empty or outside the {height}x{width} image")
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    crop = np.ascontiguousarray(image[row0:row1, col0:col1])
    if crop.shape[:2] == (size, size):
        return crop.copy() if crop.base is image else crop
    resized = Image.fromarray(crop).resize((size, size), _RESAMPLE)
    return np.array(resized, dtype=np.uint8)


def crops_for(
    image: NDArray[np.uint8], segmentation: Segmentation, size: int = CROP_SIZE
) -> NDArray[np.uint8]:
    """The crop of every superpixel, in index order.

    Args:
        image: (H, W, 3) uint8 RGB tile that `segmentation` was made from.
        segmentation: Its superpixels.
        size: Side of each square crop.

    Returns:
        (n, size, size, 3) uint8; row i is superpixel i.

    Raises:
        ValueError: The image and the segmentation differ in size, or as `crop_superpixel`.
    """
    if np.shape(image)[:2] != segmentation.labels.shape:
        raise ValueError(
            f"image {np.shape(image)[:2]} and segmentation {segmentation.labels.shape} differ"
        )
    out = np.empty((len(segmentation.superpixels), size, size, 3), dtype=np.uint8)
    for i, superpixel in enumerate(segmentation.superpixels):
        out[i] = crop_superpixel(image, superpixel.bbox, size)
    return out


def polygon_of(segmentation: Segmentation, index: int) -> list[Ring]:
    """Outline of a superpixel in tile pixel coordinates, as polygon rings.

    Coordinates are (x, y) = (column, row) of pixel corners: (0, 0) is the top-left corner of
    the tile and (W, H) its bottom-right one, so an affine geotransform maps them directly.
    The outline runs along pixel edges with corners cut (marching squares at level 0.5), then
    is simplified with Douglas-Peucker at a tolerance of 1 px.

    Args:
        segmentation: The tile's segmentation.
        index: Which superpixel.

    Returns:
        Closed rings (first point repeated last), GeoJSON-style: the exterior first, then the
        holes (other superpixels it surrounds). The exterior turns counter-clockwise as seen on
        screen (negative shoelace area with y down), so a north-up geotransform leaves it
        counter-clockwise as RFC 7946 asks; holes turn the other way. A superpixel in several pieces (not one from
        SLIC, whose segments are 4-connected) is outlined by its largest piece only.

    Raises:
        IndexError: `index` is not a superpixel of `segmentation`.
    """
    if not 0 <= index < len(segmentation.superpixels):
        raise IndexError(f"superpixel {index} of {len(segmentation.superpixels)}")
    row0, col0, row1, col1 = segmentation.superpixels[index].bbox
    mask = segmentation.labels[row0:row1, col0:col1] == index
    # The pad closes every contour; -0.5 turns padded pixel-centre indices into corner
    # coordinates of the tile.
    contours = find_contours(np.pad(mask, 1).astype(np.float64), 0.5)  # type: ignore[no-untyped-call]
    rings = [
        [(float(c) + col0 - 0.5, float(r) + row0 - 0.5) for r, c in contour] for contour in contours
    ]
    areas = [_signed_area(ring) for ring in rings]
    outer = max(range(len(rings)), key=lambda i: abs(areas[i]))
    exterior = _simplified(rings[outer])
    holes = [
        _simplified(ring)
        for i, ring in enumerate(rings)
        if i != outer and abs(areas[i]) < abs(areas[outer]) and _inside(ring[0], rings[outer])
    ]
    return [_oriented(exterior, clockwise_on_screen=False)] + [
        _oriented(hole, clockwise_on_screen=True) for hole in holes if len(hole) >= 4
    ]


def _simplified(ring: Ring) -> Ring:
    """Douglas-Peucker at 1 px, unless that collapses the ring (a superpixel of a few pixels)."""
    points = approximate_polygon(np.asarray(ring), tolerance=1.0)  # type: ignore[no-untyped-call]
    simple = [(float(x), float(y)) for x, y in points]
    if len(simple) < 4 or abs(_signed_area(simple)) == 0:
        return ring
    return simple


def _oriented(ring: Ring, *, clockwise_on_screen: bool) -> Ring:
    # Shoelace area in (x right, y down) coordinates: negative means counter-clockwise on screen.
    negative = _signed_area(ring) < 0
    return ring if negative != clockwise_on_screen else ring[::-1]


def _signed_area(ring: Ring) -> float:
    xs = np.array([p[0] for p in ring])
    ys = np.array([p[1] for p in ring])
    return float(0.5 * (np.dot(xs[:-1], ys[1:]) - np.dot(xs[1:], ys[:-1])))


def _inside(point: tuple[float, float], ring: Ring) -> bool:
    """Even-odd rule: whether `point` lies inside the closed `ring`."""
    x, y = point
    inside = False
    for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside
