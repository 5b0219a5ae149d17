"""Debug pictures: a tile with its superpixels tinted by score and outlined."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from skimage.segmentation import find_boundaries

from amberscan.vision.segment import Segmentation, boundaries

_LOW = np.array([40.0, 170.0, 60.0])  # green: score 0
_HIGH = np.array([230.0, 30.0, 30.0])  # red: score 1


def score_overlay(
    image: NDArray[np.uint8],
    segmentation: Segmentation,
    scores: NDArray[np.floating[Any]],
    threshold: float,
    alpha: float = 0.35,
) -> NDArray[np.uint8]:
    """`image` with each superpixel tinted from green (0) to red (1) by its score.

    Boundaries are drawn white; positive superpixels (score >= threshold) get a thick red
    outline so the rule's inputs can be counted at a glance.
    """
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    colours = _LOW[None, :] * (1 - s[:, None]) + _HIGH[None, :] * s[:, None]
    tint = colours[segmentation.labels]
    out = image.astype(np.float64) * (1 - alpha) + tint * alpha
    out[boundaries(segmentation)] = 255.0
    positive = np.flatnonzero(s >= threshold)
    if positive.size:
        mask = np.isin(segmentation.labels, positive)
        edge = find_boundaries(mask.astype(np.int8), mode="thick")  # type: ignore[no-untyped-call]
        out[edge & mask] = _HIGH
    return out.round().astype(np.uint8)
