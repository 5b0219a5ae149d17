"""The labels a verdict gives its tile's superpixels, and a relabel's precedence (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from amberscan.web.core import labels_from_verdict
from amberscan.web.review_queries import ReviewedSuperpixel
from amberscan.web.training import review_labels

SCORES = [0.1, 0.8, 0.3, 0.9, 0.6]


@pytest.mark.parametrize(
    ("verdict", "positives", "expected"),
    [
        ("rejected", 3, {1: 0, 3: 0, 4: 0}),  # the three highest: hard negatives
        ("confirmed", 3, {1: 1, 3: 1, 4: 1}),
        ("confirmed", 1, {3: 1}),
        ("rejected", 0, {}),  # nothing positive, nothing derived
    ],
)
def test_labels_from_verdict(verdict: str, positives: int, expected: dict[int, int]) -> None:
    assert labels_from_verdict(verdict, SCORES, positives) == expected


def test_labels_from_verdict_refuses_other_verdicts() -> None:
    with pytest.raises(ValueError, match="verdict"):
        labels_from_verdict("maybe", SCORES, 2)


def test_a_relabel_overrides_its_tiles_verdict() -> None:
    verdict = {
        "tile_id": "0123", "imagery_date": "2015-01-01", "model_version": "m1",
        "verdict": "confirmed", "reviewer": "ana", "reviewed_at": datetime(2026, 1, 1, tzinfo=UTC),
        "scores": SCORES, "positives": 2, "image_key": "i", "labels_key": "k",
    }  # fmt: skip
    relabel = ReviewedSuperpixel("0123", "2015-01-01", "i", "k", 3, 0, "relabelled", "bo")
    other = ReviewedSuperpixel("0123", "2015-01-01", "i", "k", 0, 1, "relabelled", "bo")
    labels = {
        (x.segment_index, x.label, x.source, x.reviewer)
        for x in review_labels([relabel, other], [verdict])
    }
    assert labels == {
        (0, 1, "relabelled", "bo"),
        (1, 1, "confirmed", "ana"),
        (3, 0, "relabelled", "bo"),
    }
