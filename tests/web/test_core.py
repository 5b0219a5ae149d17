"""Web core: parsing, shaping and statistics, without servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.web import core


def test_implied_threshold() -> None:
    scores = [0.1, 0.9, 0.6, 0.3]
    assert core.implied_threshold(scores, 2) == pytest.approx(0.6)
    assert core.implied_threshold(scores, 0) > 0.9
    assert sum(s >= core.implied_threshold(scores, 0) for s in scores) == 0
    assert core.implied_threshold([], 0) == 1.0


@given(st.lists(st.floats(0, 1), min_size=1, max_size=40, unique=True), st.integers(0, 40))
def test_implied_threshold_reproduces_the_count(scores: list[float], positives: int) -> None:
    positives = min(positives, len(scores))
    threshold = core.implied_threshold(scores, positives)
    assert sum(s >= threshold for s in scores) == positives


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (1, 2, 0.0945, 0.9055)],
)
def test_wilson_interval(k: int, n: int, low: float, high: float) -> None:
    p = core.wilson_interval(k, n)
    assert p.estimate == pytest.approx(k / n)
    assert p.low == pytest.approx(low, abs=1e-4) and p.high == pytest.approx(high, abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert core.wilson_interval(0, 0).estimate is None
    with pytest.raises(ValueError):
        core.wilson_interval(3, 2)


def _row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "tile_id": "1203",
        "imagery_date": "2014-10-11",
        "model_version": "m1",
        "backbone_version": "b1",
        "scan_id": "s",
        "provider": "demo",
        "flagged": True,
        "positives": 3,
        "segment_count": 4,
        "min_positives": 2,
        "hectares": 1.25,
        "scores": [0.9, 0.8, 0.7, 0.1],
        "demo": True,
        "geojson": json.dumps(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
        ),
        "verdict": None,
        "reviewer": None,
        "reviewed_at": None,
        "detected_at": datetime(2026, 1, 1, tzinfo=UTC),
        "west": 0.0,
        "south": 0.0,
        "east": 1.0,
        "north": 1.0,
    }
    row.update(over)
    return row


def test_feature_collection_paging() -> None:
    fc = core.feature_collection([_row(), _row(tile_id="1204")], matched=5, offset=2)
    assert fc["numberReturned"] == 2 and fc["next_offset"] == 4
    f = fc["features"][0]
    assert f["id"] == "1203|2014-10-11|m1" and f["properties"]["max_score"] == 0.9
    assert f["properties"]["review"] == "unreviewed" and f["properties"]["year"] == "2014"
    assert core.feature_collection([_row()], matched=3, offset=2)["next_offset"] is None


def test_label_overlay() -> None:
    image = np.full((4, 4, 3), 100, np.uint8)
    labels = np.array([[0, 0, 1, 1]] * 4, np.int32)
    edges = np.zeros((4, 4), bool)
    out = core.label_overlay(image, labels, edges, {1: 1})
    assert (out[:, :2] == 100).all() and (out[:, 2:, 0] > 100).all()
