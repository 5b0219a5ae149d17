"""The label image of a segmentation as bytes: a 16-bit grayscale PNG, label value = index.

The segmenter stores it beside a tile's crops; the web app and the training export read it back
to outline superpixels. Pure: bytes in, arrays out.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

MAX_LABEL = 65535


def encode_labels(labels: NDArray[np.int32]) -> bytes:
    """The label image as a 16-bit grayscale PNG (label value = segment index).

    Raises:
        ValueError: a label does not fit 16 bits.
    """
    if labels.max(initial=0) > MAX_LABEL:
        raise ValueError("more than 65536 segments do not fit a 16-bit label image")
    buffer = io.BytesIO()
    Image.fromarray(labels.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_labels(data: bytes) -> NDArray[np.int32]:
    """Inverse of `encode_labels`."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image).astype(np.int32)
