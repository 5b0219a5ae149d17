"""The compiled 2018 SLIC input against SciPy and scikit-image themselves: every bit equal."""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.color import rgb2lab
from skimage.util import img_as_float

from amberscan.vision.colour import smoothed_lab
from amberscan.vision.imageio import read_image

SHARED_TILES = ("positive1", "positive2", "negative1", "negative2")


def reference(image: np.ndarray, sigma: float) -> np.ndarray:
    rgb = img_as_float(image)
    if sigma > 0:
        rgb = ndi.gaussian_filter(rgb, sigma=(sigma, sigma, 0.0))
    return rgb2lab(rgb)


@pytest.mark.parametrize("name", SHARED_TILES)
def test_the_shared_tiles_lab_is_scikit_images_bit_for_bit(shared_data: Path, name: str) -> None:
    image = read_image(shared_data / "tiles" / f"{name}.png")
    np.testing.assert_array_equal(smoothed_lab(image, 1.0), reference(image, 1.0))


@pytest.mark.parametrize(
    ("shape", "sigma"),
    [
        ((37, 53, 3), 1.0),
        ((3, 2, 3), 1.0),
        ((1, 1, 3), 2.5),
        ((40, 17, 3), 0.25),
        ((20, 33, 3), 0),
        ((131, 1030, 3), 1.0),
    ],
)
def test_any_size_and_sigma_match_bit_for_bit(shape: tuple[int, int, int], sigma: float) -> None:
    # Tiny images reflect their edge more than once, as SciPy does; bands of rows end mid-image.
    image = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    np.testing.assert_array_equal(smoothed_lab(image, sigma), reference(image, sigma))


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        smoothed_lab(np.zeros((4, 4, 3), dtype=np.float64), 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        smoothed_lab(np.zeros((0, 4, 3), dtype=np.uint8), 1.0)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        smoothed_lab(np.zeros((4, 4, 3), dtype=np.uint8), -1.0)
