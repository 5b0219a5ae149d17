"""The debug picture: superpixels tinted by score, outlined, positives outlined in red."""

from __future__ import annotations

import numpy as np

from amberscan.vision.overlay import score_overlay
from amberscan.vision.segment import Segmentation, boundaries

RED = [230, 30, 30]


def test_tint_outlines_and_positive_edges() -> None:
    image = np.full((10, 20, 3), 100, dtype=np.uint8)
    labels = np.repeat([[0] * 10 + [1] * 10], 10, axis=0)
    segmentation = Segmentation.from_labels(labels)
    out = score_overlay(image, segmentation, np.array([0.0, 1.0]), threshold=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    inside_low, inside_high = out[5, 4], out[5, 15]
    assert inside_low[1] > inside_low[0]  # green-ish where the score is 0
    assert inside_high[0] > inside_high[1]  # red-ish where it is 1
    edges = boundaries(segmentation)
    low_edge = edges & (labels == 0)
    assert (out[low_edge] == 255).all()  # the negative superpixel's outline is white
    high_edge = edges & (labels == 1)
    assert (out[high_edge] == RED).all()  # the positive one's is red


def test_no_positive_no_red_outline() -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    segmentation = Segmentation.from_labels(np.repeat([[0] * 4 + [1] * 4], 8, axis=0))
    out = score_overlay(image, segmentation, np.array([0.1, 0.2]), threshold=0.5)
    assert not (out == RED).all(axis=-1).any()
