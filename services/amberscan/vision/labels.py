"""The label image of a segmentation as bytes: a 16-bit grayscale PNG, label value = index.

The segmenter stores it beside the tile; the web app and the training export read it back
to outline superpixels. Pure: bytes in, arrays out.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from amberscan.errors import InvalidImage
from amberscan.vision.imageio import PNG_COMPRESS_LEVEL

MAX_LABEL = 65535


def encode_labels(labels: NDArray[np.int32]) -> bytes:
    """The label image as a 16-bit grayscale PNG (label value = segment index).

    Raises:
        ValueError: a label does not fit 16 bits.
    """
    if labels.max(initial=0) > MAX_LABEL:
        raise ValueError("more than 65536 segments do not fit a 16-bit label image")
    buffer = io.BytesIO()
    Image.fromarray(labels.astype(np.uint16)).save(
        buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL
    )
    return buffer.getvalue()


def decode_labels(data: bytes, source: str = "label image") -> NDArray[np.int32]:
    """Inverse of `encode_labels`.

    Args:
        data: The PNG's bytes.
        source: What they are (a blob key); it starts every error message.

    Raises:
        InvalidImage: the bytes are not a PNG, or not a single-band 8- or 16-bit one.
    """
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            image.load()
            labels = np.asarray(image)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImage(f"{source}: not a label PNG ({error})") from None
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise InvalidImage(
            f"{source}: a label image has one integer band, got {labels.dtype} {labels.shape}"
        )
    return labels.astype(np.int32)
