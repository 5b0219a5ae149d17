"""scikit-image's SLIC on a Lab image, label for label, with its two loops compiled by Numba.

`slic_labels(lab, ...)` returns what ``skimage.segmentation.slic(lab, convert2lab=False,
sigma=0, enforce_connectivity=True, start_label=0, channel_axis=-1, ...)`` returns under the
pinned scikit-image (0.26): the same normalisation, grid seeds, ten k-means iterations and
connectivity clean-up, with every floating-point operation of its Cython core done in the same
order on the same float64 values, so the labels are identical (tests/vision/test_slic.py checks
it against scikit-image itself). Two things make it faster, neither changes a result:

- scikit-image assigns pixels segment by segment, each over a window four grid steps wide —
  half of a 1024-px tile with 30 segments —, so every segment streams the whole image through
  memory. Here the image is walked row by row and each row meets its segments in the same
  order: every pixel sees the same comparisons in the same order, with the row in cache.
- The assignment's inner loop has no branch (a select instead), so LLVM vectorises it.

The centroid update sums in raster order, as scikit-image does; the order of floating-point
additions is part of the result.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray
from skimage.util import regular_grid

# scikit-image's SLIC default.
MAX_NUM_ITER = 10
_FAR = np.finfo(np.float64).max


def slic_labels(
    lab: NDArray[np.float64],
    *,
    n_segments: int,
    compactness: float,
    min_size_factor: float,
    max_size_factor: float,
    max_num_iter: int = MAX_NUM_ITER,
) -> NDArray[np.intp]:
    """SLIC superpixels of a Lab image, as scikit-image's `slic` makes them.

    Args:
        lab: (H, W, 3) float64, the image already in Lab (and smoothed, if it is to be).
        n_segments, compactness, min_size_factor, max_size_factor, max_num_iter: As in
            ``skimage.segmentation.slic``.

    Returns:
        (H, W) labels from 0, connected, numbered in raster order of their first pixel.

    Raises:
        ValueError: `lab` is not (H, W, 3), is empty, or holds NaN or infinite values.
    """
    if lab.ndim != 3 or lab.shape[2] != 3 or lab.shape[0] == 0 or lab.shape[1] == 0:
        raise ValueError(f"slic_labels needs an (H, W, 3) image, got {lab.shape}")
    image = np.ascontiguousarray(lab, dtype=np.float64)
    low, high = image.min(), image.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("slic_labels needs finite values")
    height, width = image.shape[:2]
    grid = regular_grid((1, height, width), n_segments)  # type: ignore[no-untyped-call]
    # The grid's points in raster order, as scikit-image takes them from an mgrid.
    seed_rows, seed_cols = np.meshgrid(
        np.arange(height)[grid[1]], np.arange(width)[grid[2]], indexing="ij"
    )
    seeds = np.stack([seed_rows.ravel(), seed_cols.ravel()], axis=1)
    # Its k-means sizes its windows by a grid for as many segments as seeds were placed.
    window_grid = regular_grid((1, height, width), len(seeds))  # type: ignore[no-untyped-call]
    step_y, step_x = (int(s.step) if s.step is not None else 1 for s in window_grid[1:])
    # scikit-image passes the largest step as a C float and squares it in float.
    step = np.float32(max(float(s.step) if s.step is not None else 1.0 for s in grid))
    spatial_weight = 1.0 / float(step * step)
    # Stretched to [0, 1] and scaled by 1 / compactness, as scikit-image does before its k-means,
    # in one pass that also makes a plane per channel.
    planes = _scaled_planes(image, float(low), float(high), 1.0 / compactness)
    centres = np.zeros((len(seeds), 5), dtype=np.float64)
    centres[:, :2] = seeds
    nearest = _kmeans(planes, centres, step_y, step_x, max_num_iter, spatial_weight)
    segment_size = height * width / len(seeds)
    min_size = int(min_size_factor * segment_size)
    max_size = max(1, int(max_size_factor * segment_size))
    labels: NDArray[np.intp] = _connect(nearest, min_size, max_size)
    return labels


@njit(cache=True, nogil=True)
def _scaled_planes(
    image: NDArray[np.float64], low: float, high: float, factor: float
) -> NDArray[np.float64]:
    """((image - low) / (high - low)) * factor, channels first: scikit-image's operations in
    its order (no division when the image is flat)."""
    height, width, channels = image.shape
    planes = np.empty((channels, height, width), np.float64)
    spread = high - low
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                value = image[y, x, c] - low
                if spread != 0.0:
                    value /= spread
                planes[c, y, x] = value * factor
    return planes


@njit(cache=True, nogil=True, error_model="numpy")
def _kmeans(
    planes: NDArray[np.float64],
    centres: NDArray[np.float64],
    step_y: int,
    step_x: int,
    max_num_iter: int,
    spatial_weight: float,
) -> NDArray[np.int32]:
    """The k-means of `_slic_cython` (2-D, no mask, not SLIC-zero); `centres` rows (y, x, L, a, b)."""
    height, width = planes.shape[1], planes.shape[2]
    n = centres.shape[0]
    nearest = np.full((height, width), -1, np.int32)
    distance = np.empty((height, width), np.float64)
    counts = np.empty(n, np.int64)
    y_lo = np.zeros(n, np.int64)
    y_hi = np.zeros(n, np.int64)
    x_lo = np.zeros(n, np.int64)
    x_hi = np.zeros(n, np.int64)
    dx2 = np.zeros((n, width), np.float64)
    for _ in range(max_num_iter):
        change = False
        distance[:, :] = _FAR
        for k in range(n):
            cy = centres[k, 0]
            cx = centres[k, 1]
            if not (cy == cy and cx == cx):
                # A segment left without pixels (0 / 0) wins no pixel: every comparison with
                # NaN is false.
                y_lo[k] = y_hi[k] = x_lo[k] = x_hi[k] = 0
                continue
            y_lo[k] = int(max(cy - 2 * step_y, 0.0))
            y_hi[k] = int(min(cy + 2 * step_y + 1, float(height)))
            x_lo[k] = int(max(cx - 2 * step_x, 0.0))
            x_hi[k] = int(min(cx + 2 * step_x + 1, float(width)))
            for x in range(x_lo[k], x_hi[k]):
                dx = cx - x
                dx2[k, x] = dx * dx
        for y in range(height):
            row_l = planes[0, y]
            row_a = planes[1, y]
            row_b = planes[2, y]
            row_distance = distance[y]
            row_nearest = nearest[y]
            for k in range(n):
                if y < y_lo[k] or y >= y_hi[k]:
                    continue
                x0 = x_lo[k]
                x1 = x_hi[k]
                if x1 <= x0:
                    continue
                # Every pixel of a window starts at _FAR, so some pixel always changes.
                change = True
                dy = centres[k, 0] - y
                dy *= dy
                cl = centres[k, 2]
                ca = centres[k, 3]
                cb = centres[k, 4]
                # Slices from 0: LLVM then knows no index wraps around and vectorises.
                seg_l = row_l[x0:x1]
                seg_a = row_a[x0:x1]
                seg_b = row_b[x0:x1]
                seg_distance = row_distance[x0:x1]
                seg_nearest = row_nearest[x0:x1]
                seg_dx2 = dx2[k, x0:x1]
                label = np.int32(k)
                for i in range(x1 - x0):
                    d = (dy + seg_dx2[i]) * spatial_weight
                    t = seg_l[i] - cl
                    colour = t * t
                    t = seg_a[i] - ca
                    colour += t * t
                    t = seg_b[i] - cb
                    colour += t * t
                    d += colour
                    old = seg_distance[i]
                    better = old > d
                    seg_nearest[i] = label if better else seg_nearest[i]
                    seg_distance[i] = d if better else old
        if not change:
            break
        counts[:] = 0
        centres[:, :] = 0.0
        for y in range(height):
            for x in range(width):
                k = nearest[y, x]
                counts[k] += 1
                centres[k, 0] += y
                centres[k, 1] += x
                centres[k, 2] += planes[0, y, x]
                centres[k, 3] += planes[1, y, x]
                centres[k, 4] += planes[2, y, x]
        for k in range(n):
            for c in range(5):
                centres[k, c] /= counts[k]
    return nearest


@njit(cache=True, nogil=True)
def _connect(nearest: NDArray[np.int32], min_size: int, max_size: int) -> NDArray[np.intp]:
    """`_enforce_label_connectivity_cython` in 2-D: each connected piece its own label, pieces
    under `min_size` pixels merged into the last neighbouring label the search met."""
    height, width = nearest.shape
    connected = np.full((height, width), -1, np.intp)
    queue = np.empty((max_size, 2), np.int64)
    # scikit-image's neighbour order: x+1, x-1, y+1, y-1 (its two z neighbours do not exist).
    step_row = (0, 0, 1, -1)
    step_col = (1, -1, 0, 0)
    next_label = 0
    for y in range(height):
        for x in range(width):
            if connected[y, x] > -1:
                continue
            adjacent = next_label
            label = nearest[y, x]
            connected[y, x] = next_label
            size = 1
            visited = 0
            queue[0, 0] = y
            queue[0, 1] = x
            while visited < size < max_size:
                for i in range(4):
                    yy = queue[visited, 0] + step_row[i]
                    xx = queue[visited, 1] + step_col[i]
                    if 0 <= xx < width and 0 <= yy < height:
                        if nearest[yy, xx] == label and connected[yy, xx] == -1:
                            connected[yy, xx] = next_label
                            queue[size, 0] = yy
                            queue[size, 1] = xx
                            size += 1
                            if size >= max_size:
                                break
                        elif connected[yy, xx] > -1 and connected[yy, xx] != next_label:
                            adjacent = connected[yy, xx]
                visited += 1
            if size < min_size:
                for i in range(size):
                    connected[queue[i, 0], queue[i, 1]] = adjacent
            else:
                next_label += 1
    return connected


def grid_seeds(height: int, width: int, n_segments: int) -> int:
    """How many seeds scikit-image's grid places for `n_segments` on a height × width image."""
    grid = regular_grid((1, height, width), n_segments)  # type: ignore[no-untyped-call]
    return math.prod(
        len(range(*s.indices(side))) for s, side in zip(grid, (1, height, width), strict=True)
    )
