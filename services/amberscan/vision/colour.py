"""The 2018 SLIC input of a tile — Gaussian-smoothed RGB in CIE Lab — bit for bit, in one pass.

`smoothed_lab(image, sigma)` returns exactly (every bit) what
``rgb2lab(ndi.gaussian_filter(img_as_float(image), sigma=(sigma, sigma, 0)))`` returns under the
pinned SciPy and scikit-image, the input the 2018 segmentation clusters (tests/vision/test_colour.py
compares them). Chained, those calls walk the whole float64 tile — 24 MB for a 1024-px tile, more
than the cache — a dozen times, and scikit-image's masked assignments copy it too. Here the tile
is processed in bands of rows that stay in cache:

- the smoothing is compiled: SciPy's ``correlate1d`` for a symmetric kernel (centre tap first,
  then the pairs of taps from the outermost in, ``reflect`` edges), down the columns and then
  along the rows, with the same float64 operations in the same order, so the same values;
- the colour conversion stays NumPy's, the same ufuncs on the same values as ``rgb2lab`` (its
  ``power`` and ``cbrt`` may be vectorised per CPU, so they are not re-implemented), applied to
  each band.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray
from skimage.color import xyz_tristimulus_values
from skimage.color.colorconv import xyz_from_rgb

# scikit-image's sRGB → XYZ matrix as rgb2xyz passes it (a transposed view, so the same BLAS
# kernel and rounding), and its D65 / 2° white point.
_RGB_TO_XYZ = xyz_from_rgb.T.astype(np.float64)
_D65 = xyz_tristimulus_values(  # type: ignore[no-untyped-call]
    illuminant="D65", observer="2", dtype=np.float64
)
# SciPy's gaussian_filter default: the kernel reaches 4 sigma.
_TRUNCATE = 4.0
# Rows per band: 16 rows of a 1024-px tile are 0.4 MB of float64, with temporaries in L2.
_BAND_ROWS = 16


def gaussian_weights(sigma: float) -> NDArray[np.float64]:
    """SciPy's ``gaussian_filter1d`` kernel for `sigma` (order 0, truncated at 4 sigma)."""
    radius = int(_TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x**2)
    weights: NDArray[np.float64] = (phi / phi.sum())[::-1].copy()
    return weights


def smoothed_lab(image: NDArray[np.uint8], sigma: float) -> NDArray[np.float64]:
    """CIE Lab (D65, 2°) of the tile smoothed by a Gaussian of `sigma` px on its RGB.

    Args:
        image: (H, W, 3) uint8 RGB.
        sigma: The Gaussian's standard deviation in pixels; 0 for none.

    Returns:
        (H, W, 3) float64: L, a, b — the values of scikit-image's ``rgb2lab`` of SciPy's
        ``gaussian_filter(img_as_float(image), (sigma, sigma, 0))``.

    Raises:
        ValueError: `image` is not a non-empty (H, W, 3) uint8 array, or `sigma` is negative.
    """
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(
            f"smoothed_lab needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}"
        )
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    height = image.shape[0]
    lab = np.empty(image.shape, dtype=np.float64)
    # SciPy leaves an axis alone when its sigma is this small.
    weights = gaussian_weights(sigma) if sigma > 1e-15 else np.ones(1)
    for row0 in range(0, height, _BAND_ROWS):
        band = lab[row0 : row0 + _BAND_ROWS]
        _smooth_band(image, weights, row0, band)
        _rgb2lab_in_place(band)
    return lab


def _rgb2lab_in_place(band: NDArray[np.float64]) -> None:
    """scikit-image's ``rgb2lab`` of `band`, written over it (the same ufuncs on the same values)."""
    linear = np.where(band > 0.04045, np.power((band + 0.055) / 1.055, 2.4), band / 12.92)
    xyz = linear @ _RGB_TO_XYZ
    xyz /= _D65
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    x, y, z = f[..., 0], f[..., 1], f[..., 2]
    np.multiply(116.0, y, out=band[..., 0])
    band[..., 0] -= 16.0
    np.subtract(x, y, out=band[..., 1])
    band[..., 1] *= 500.0
    np.subtract(y, z, out=band[..., 2])
    band[..., 2] *= 200.0


@njit(cache=True, nogil=True)
def _reflect(index: int, size: int) -> int:
    """SciPy's ``reflect`` edge (d c b a | a b c d | d c b a), repeated for images narrower
    than the kernel."""
    index %= 2 * size
    return 2 * size - 1 - index if index >= size else index


@njit(cache=True, nogil=True)
def _smooth_band(
    image: NDArray[np.uint8], weights: NDArray[np.float64], row0: int, out: NDArray[np.float64]
) -> None:
    """Rows row0 .. row0 + len(out) of the smoothed ``image / 255``, into `out`."""
    height, width = image.shape[0], image.shape[1]
    radius = (weights.shape[0] - 1) // 2
    scale = 1.0 / 255
    flat = image.reshape(height, width * 3)
    span = width * 3
    column = np.empty(span, np.float64)
    # The column pass's row, with `radius` reflected pixels each side for the row pass.
    line = np.empty((width + 2 * radius) * 3, np.float64)
    for r in range(out.shape[0]):
        y = row0 + r
        # Down the columns (axis 0): what correlate1d computes, term by term.
        centre = flat[y]
        for i in range(span):
            column[i] = (centre[i] * scale) * weights[radius]
        for j in range(-radius, 0):
            above = flat[_reflect(y + j, height)]
            below = flat[_reflect(y - j, height)]
            w = weights[radius + j]
            for i in range(span):
                column[i] += (above[i] * scale + below[i] * scale) * w
        for i in range(span):
            line[radius * 3 + i] = column[i]
        for k in range(radius):
            left = _reflect(-1 - k, width)
            right = _reflect(width + k, width)
            for c in range(3):
                line[(radius - 1 - k) * 3 + c] = column[left * 3 + c]
                line[(radius + width + k) * 3 + c] = column[right * 3 + c]
        # Along the rows (axis 1), the channel axis untouched.
        row = out[r].reshape(span)
        base = radius * 3
        for i in range(span):
            row[i] = line[base + i] * weights[radius]
        for j in range(-radius, 0):
            w = weights[radius + j]
            ahead = base + j * 3
            behind = base - j * 3
            for i in range(span):
                row[i] += (line[ahead + i] + line[behind + i]) * w
