"""The CNN's view of a superpixel: its box cropped from the tile and resized.

The 2018 pipeline cropped each superpixel's bounding box from the tile, unmasked, and resized it
to 224x224 with nearest-neighbour sampling: at detection time explicitly
(``crop.resize((224, 224), Image.NEAREST)`` in step3.ipynb), and for training through
``keras.preprocessing.image.load_img(path, target_size=(224, 224))``, whose default
interpolation is ``"nearest"``. Pillow's NEAREST gives the same pixels today as Pillow 5.2 did
in 2018 (checked on 100 crops of the shared tiles). The default model resizes with Pillow's
antialiased bilinear instead (`CROP_RESAMPLE`), for training crops and tiles alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from amberscan.vision.imageio import read_image
from amberscan.vision.segment import Segmentation

CROP_SIZE = 224
Resample = Literal["nearest", "bilinear"]
# "bilinear" is Pillow's, which widens its kernel when it shrinks (antialiased, as torchvision's
# Resize): nearest-neighbour shrinking by up to 2.4x aliases fine texture such as pits.
_RESAMPLERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
}
# How the default model's crops are made, for training and scanning alike (the export records
# it in amberscan.json, and `stack/model.sh` rebuilds a model made with another). Bilinear since
# the Lite1 default: in its nested CV recall at precision 0.95 rose from 0.933 (nearest) to 0.954,
# and positive2's verdict held in 39 of 40 turns and resizes against 26 (docs/model.md).
# Lite0 measured the other way (0.892 bilinear against 0.928 nearest).
CROP_RESAMPLE: Resample = "bilinear"


def crop_superpixel(
    image: NDArray[np.uint8],
    bbox: tuple[int, int, int, int],
    size: int = CROP_SIZE,
    resample: Resample = CROP_RESAMPLE,
) -> NDArray[np.uint8]:
    """The image inside `bbox`, resized to size x size as the 2018 pipeline did.

    Args:
        image: (H, W, 3) uint8 RGB tile.
        bbox: (row0, col0, row1, col1), half-open, inside the image and not empty.
        size: Side of the square output.
        resample: "nearest" (the 2018 crops) or "bilinear" (antialiased).

    Returns:
        (size, size, 3) uint8.

    Raises:
        ValueError: The image is not (H, W, 3) uint8, the box is empty or outside it, or the
            resampling is unknown.
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
    if resample not in _RESAMPLERS:
        raise ValueError(f"crop resampling must be one of {sorted(_RESAMPLERS)}, got {resample!r}")
    crop = np.ascontiguousarray(image[row0:row1, col0:col1])
    if crop.shape[:2] == (size, size):
        return crop.copy() if crop.base is image else crop
    resized = Image.fromarray(crop).resize((size, size), _RESAMPLERS[resample])
    return np.array(resized, dtype=np.uint8)


def crops_for(
    image: NDArray[np.uint8],
    segmentation: Segmentation,
    size: int = CROP_SIZE,
    resample: Resample = CROP_RESAMPLE,
) -> NDArray[np.uint8]:
    """The crop of every superpixel, in index order.

    Args:
        image: (H, W, 3) uint8 RGB tile that `segmentation` was made from.
        segmentation: Its superpixels.
        size: Side of each square crop.
        resample: As `crop_superpixel`.

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
        out[i] = crop_superpixel(image, superpixel.bbox, size, resample)
    return out


def load_crop(
    path: str | Path, size: int = CROP_SIZE, resample: Resample = CROP_RESAMPLE
) -> NDArray[np.uint8]:
    """A labelled crop file resized to `size` (the served model's crop size), as the feature
    stage cuts a superpixel's crop from its tile: the whole image is the box.

    Raises:
        InvalidImage: the file is not a readable image.
    """
    image = read_image(path)
    return crop_superpixel(image, (0, 0, image.shape[0], image.shape[1]), size, resample)
