"""Crops: each superpixel's box cut from the tile and resized by nearest neighbour, as in 2018,
or antialiased."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amberscan.errors import InvalidImage
from amberscan.vision.crops import CROP_SIZE, crop_superpixel, crops_for, load_crop
from amberscan.vision.imageio import encode_png
from amberscan.vision.segment import Segmentation


def gradient(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)


def test_a_box_of_the_crop_size_is_cut_unchanged() -> None:
    image = gradient(300, 400)
    crop = crop_superpixel(image, (10, 20, 10 + CROP_SIZE, 20 + CROP_SIZE))
    np.testing.assert_array_equal(crop, image[10 : 10 + CROP_SIZE, 20 : 20 + CROP_SIZE])
    crop[0, 0] = 0  # a copy: the tile is not changed through it
    assert image[10, 20].tolist() == [10, 20, 30]


def test_resizing_is_nearest_neighbour() -> None:
    image = gradient(8, 8)
    crop = crop_superpixel(image, (2, 4, 4, 6), size=4, resample="nearest")  # each pixel doubled
    np.testing.assert_array_equal(crop, image[2:4, 4:6].repeat(2, axis=0).repeat(2, axis=1))
    assert set(map(tuple, crop.reshape(-1, 3))) <= set(map(tuple, image[2:4, 4:6].reshape(-1, 3)))


def test_bilinear_shrinking_averages_what_nearest_aliases() -> None:
    # A one-pixel checkerboard shrunk by 4: nearest neighbour keeps one phase of it (all black
    # or all white, depending on where the samples fall); the antialiased resize sees its mean.
    rows, cols = np.mgrid[0:64, 0:64]
    board = np.repeat((((rows + cols) % 2) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    nearest = crop_superpixel(board, (0, 0, 64, 64), size=16, resample="nearest")
    smooth = crop_superpixel(board, (0, 0, 64, 64), size=16, resample="bilinear")
    assert set(np.unique(nearest)) <= {0, 255} and len(np.unique(nearest)) == 1
    assert np.abs(smooth.astype(int) - 127.5).max() <= 2


def test_bilinear_keeps_a_flat_crop_flat_and_the_crop_size_unchanged() -> None:
    flat = np.full((90, 130, 3), (40, 120, 200), dtype=np.uint8)
    crop = crop_superpixel(flat, (5, 7, 85, 127), resample="bilinear")
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8
    assert np.all(crop == np.array([40, 120, 200], dtype=np.uint8))
    image = gradient(300, 400)
    box = (10, 20, 10 + CROP_SIZE, 20 + CROP_SIZE)
    np.testing.assert_array_equal(
        crop_superpixel(image, box, resample="bilinear"), image[10:234, 20:244]
    )


def test_an_unknown_resampling_is_refused() -> None:
    with pytest.raises(ValueError, match="resampling must be one of"):
        crop_superpixel(gradient(8, 8), (0, 0, 4, 4), resample="cubic")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bbox", "problem"),
    [
        ((0, 0, 0, 5), "empty or outside"),
        ((0, 0, 9, 5), "empty or outside"),
        ((3, 3, 2, 5), "empty or outside"),
    ],
)
def test_a_bad_box_is_refused(bbox: tuple[int, int, int, int], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        crop_superpixel(gradient(8, 8), bbox)


def test_a_non_rgb_image_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        crop_superpixel(np.zeros((8, 8), dtype=np.uint8), (0, 0, 4, 4))


def test_crops_for_gives_superpixel_i_in_row_i() -> None:
    image = gradient(6, 9)
    labels = np.repeat([[0, 0, 0, 1, 1, 1, 2, 2, 2]], 6, axis=0)
    segmentation = Segmentation.from_labels(labels)
    for resample in ("nearest", "bilinear"):
        crops = crops_for(image, segmentation, size=6, resample=resample)
        assert crops.shape == (3, 6, 6, 3) and crops.dtype == np.uint8
        for i, superpixel in enumerate(segmentation.superpixels):
            expected = crop_superpixel(image, superpixel.bbox, 6, resample)
            np.testing.assert_array_equal(crops[i], expected)
    with pytest.raises(ValueError, match="differ"):
        crops_for(gradient(6, 8), segmentation)


def test_a_crop_file_is_its_whole_image_resized(tmp_path: Path) -> None:
    image = gradient(60, 45)
    path = tmp_path / "super_1.png"
    path.write_bytes(encode_png(image))
    np.testing.assert_array_equal(
        load_crop(path, size=16), crop_superpixel(image, (0, 0, 60, 45), 16)
    )
    assert load_crop(path).shape == (CROP_SIZE, CROP_SIZE, 3)


def test_a_crop_file_that_is_no_image_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "super_2.png"
    path.write_bytes(b"not a png")
    with pytest.raises(InvalidImage, match="super_2.png"):
        load_crop(path)
