"""The compiled SLIC gives scikit-image's labels exactly, on random images and on the real tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.color import rgb2lab
from skimage.segmentation import slic
from skimage.util import img_as_float

from amberscan.vision.imageio import read_image
from amberscan.vision.segment import slic_2018_input
from amberscan.vision.slic import slic_labels


def skimage_slic(lab: np.ndarray, **kwargs: Any) -> np.ndarray:
    """What vision/slic.py must reproduce: scikit-image's own slic on the same Lab image."""
    labels: np.ndarray = slic(
        lab,
        sigma=0,
        convert2lab=False,
        enforce_connectivity=True,
        start_label=0,
        channel_axis=-1,
        **kwargs,
    )
    return labels


def random_lab(height: int, width: int, seed: int, blocks: int) -> np.ndarray:
    """Blocks of colour plus noise, in Lab: segments to find, ties and tiny pieces to merge."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (blocks, blocks, 3))
    rows = np.arange(height) * blocks // height
    cols = np.arange(width) * blocks // width
    image = colours[rows[:, None], cols[None, :]] + rng.integers(-30, 31, (height, width, 3))
    lab: np.ndarray = rgb2lab(img_as_float(np.clip(image, 0, 255).astype(np.uint8)))
    return lab


@settings(max_examples=80, deadline=None)
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    seed=st.integers(0, 2**32 - 1),
    blocks=st.integers(1, 6),
    n_segments=st.integers(1, 50),
    compactness=st.sampled_from([0.01, 0.5, 10.0, 35.0, 500.0]),
    min_size_factor=st.sampled_from([0.0, 0.5, 1.5]),
)
def test_labels_equal_scikit_image(
    height: int,
    width: int,
    seed: int,
    blocks: int,
    n_segments: int,
    compactness: float,
    min_size_factor: float,
) -> None:
    lab = random_lab(height, width, seed, blocks)
    kwargs = {
        "n_segments": n_segments,
        "compactness": compactness,
        "min_size_factor": min_size_factor,
        "max_size_factor": 3.0,
    }
    np.testing.assert_array_equal(slic_labels(lab, **kwargs), skimage_slic(lab, **kwargs))


def test_constant_image_is_one_grid_of_segments() -> None:
    lab = np.full((40, 60, 3), 50.0)
    kwargs = {"n_segments": 6, "compactness": 10.0, "min_size_factor": 0.5, "max_size_factor": 3.0}
    np.testing.assert_array_equal(slic_labels(lab, **kwargs), skimage_slic(lab, **kwargs))


@pytest.mark.parametrize("name", ["negative1", "negative2", "positive1", "positive2"])
def test_real_tile_labels_equal_scikit_image(shared_data: Path, name: str) -> None:
    # Both given what the 2018 segmentation gives today's slic: its k-means and clean-up compared.
    lab, kwargs = slic_2018_input(read_image(shared_data / "tiles" / f"{name}.png"))
    np.testing.assert_array_equal(slic_labels(lab, **kwargs), skimage_slic(lab, **kwargs))


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 4, 3)), np.zeros((4, 4)), np.zeros((4, 4, 4)), np.full((4, 4, 3), np.nan)]
)
def test_refuses_what_is_not_a_finite_lab_image(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="slic_labels needs"):
        slic_labels(bad, n_segments=4, compactness=1.0, min_size_factor=0.5, max_size_factor=3.0)
