"""Per-tile verdict from superpixel scores: the 2018 rule, as a pure function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from amberscan.model.classifier import verdict
from amberscan.vision.segment import Segmentation


@dataclass(frozen=True)
class ScoredSuperpixel:
    index: int
    bbox: tuple[int, int, int, int]  # (row0, col0, row1, col1), half-open
    area_px: int
    score: float


@dataclass(frozen=True)
class TileResult:
    flagged: bool
    positives: int
    min_positives: int
    threshold: float
    superpixels: tuple[ScoredSuperpixel, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "flagged": self.flagged,
            "positives": self.positives,
            "min_positives": self.min_positives,
            "threshold": self.threshold,
            "superpixels": [
                {"index": s.index, "bbox": list(s.bbox), "area_px": s.area_px, "score": s.score}
                for s in self.superpixels
            ],
        }


def tile_result(
    segmentation: Segmentation,
    scores: NDArray[np.floating[Any]],
    threshold: float,
    min_positives: int,
) -> TileResult:
    """Scores joined to their superpixels, and the tile's verdict (more than K positives)."""
    if len(scores) != len(segmentation.superpixels):
        raise ValueError(f"{len(scores)} scores for {len(segmentation.superpixels)} superpixels")
    flagged, positives = verdict(scores, threshold, min_positives)
    return TileResult(
        flagged=flagged,
        positives=positives,
        min_positives=min_positives,
        threshold=threshold,
        superpixels=tuple(
            ScoredSuperpixel(sp.index, sp.bbox, sp.area_px, float(score))
            for sp, score in zip(segmentation.superpixels, scores, strict=True)
        ),
    )
