"""Web core: the filter type, GeoJSON shaping, audit statistics, overlays. Pure.

Nothing here opens a connection or reads a file: rows in, documents out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_PAGE = 5000
DEFAULT_PAGE = 500
VERDICTS = ("confirmed", "rejected")
# `reflagged`: rejected by a reviewer, flagged again by a later model (queries.REVIEW_STATE).
REVIEW_STATES = ("confirmed", "rejected", "reflagged", "unreviewed")
# A superpixel's label as people name it, by the value training stores (1: mining).
LABEL_NAMES = {1: "mining", 0: "not_mining"}
LABELS = {name: value for value, name in LABEL_NAMES.items()}
_YEAR = re.compile(r"^\d{4}$")


class BadRequest(ValueError):
    """A request parameter that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Filters:
    """What the map, the summary and the exports are restricted to."""

    bbox: tuple[float, float, float, float] | None = None
    year: str = ""  # a vintage: the imagery year ("unknown" for undated imagery)
    model: str = ""
    review: str = ""  # one of REVIEW_STATES
    change: str = ""  # with a year: "new", "gone" or "changed" against the previous vintage
    limit: int = DEFAULT_PAGE
    offset: int = 0
    flagged: bool = False  # flagged tiles only (exports)
    region: str = ""  # WKT of a polygonal region the tiles meet (exports)


def year_of(imagery_date: str) -> str:
    """The year of an ISO imagery date, "unknown" when the provider gave none."""
    return imagery_date[:4] if _YEAR.match(imagery_date[:4]) else "unknown"


def implied_threshold(scores: Sequence[float], positives: int) -> float:
    """The score threshold consistent with a detection's stored positive count.

    The detections table keeps the scores and how many were positive, not the classifier's
    threshold; the threshold is recovered as the lowest score among the `positives` highest
    (above every score when none was positive).
    """
    ordered = sorted((float(s) for s in scores), reverse=True)
    if not ordered:
        return 1.0
    if positives <= 0:
        return math.nextafter(ordered[0], math.inf)
    return ordered[min(positives, len(ordered)) - 1]


def labels_from_verdict(verdict: str, scores: Sequence[float], positives: int) -> dict[int, int]:
    """The labels a verdict gives a tile's positive superpixels (those of the detection the
    verdict was made on, `implied_threshold` of its stored count): a rejected tile's become not
    mining (0, hard negatives), a confirmed tile's mining (1). A person's relabel of a
    superpixel overrides what its tile's verdict gives it (`web.training`)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
    if positives <= 0:
        return {}
    threshold = implied_threshold(scores, positives)
    label = 1 if verdict == "confirmed" else 0
    return {i: label for i, s in enumerate(scores) if float(s) >= threshold}


def review_state(verdict: str | None) -> str:
    return verdict if verdict in VERDICTS or verdict == "reflagged" else "unreviewed"


def feature_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A GeoJSON Feature of one detection row (a dict with the columns of `queries.COLUMNS`)."""
    scores = [round(float(s), 4) for s in row["scores"] or []]
    return {
        "type": "Feature",
        "id": f"{row['tile_id']}|{row['imagery_date']}|{row['model_version']}",
        "geometry": json.loads(row["geojson"]),
        "properties": {
            "tile_id": row["tile_id"],
            "imagery_date": row["imagery_date"],
            "year": year_of(row["imagery_date"]),
            "model_version": row["model_version"],
            "backbone_version": row["backbone_version"],
            "scan_id": row["scan_id"],
            "provider": row["provider"],
            "flagged": bool(row["flagged"]),
            "positives": int(row["positives"]),
            "segment_count": int(row["segment_count"]),
            "min_positives": int(row["min_positives"]),
            "hectares": round(float(row["hectares"]), 4),
            "max_score": max(scores, default=0.0),
            "scores": scores,
            "demo": bool(row["demo"]),
            "review": review_state(row.get("review", row["verdict"])),
            "reviewed_model": row.get("reviewed_model") or "",
            "excluded": row.get("exclusion_reason") is not None,
            "exclusion_reason": row.get("exclusion_reason") or "",
            "reviewer": row["reviewer"] or "",
            "reviewed_at": row["reviewed_at"].isoformat() if row["reviewed_at"] else "",
            "detected_at": row["detected_at"].isoformat() if row["detected_at"] else "",
        },
    }


def feature_collection(
    rows: Iterable[Mapping[str, Any]], *, matched: int | None = None, offset: int = 0
) -> dict[str, Any]:
    """A FeatureCollection; with `matched`, paging members say how many match in all."""
    features = [feature_of(r) for r in rows]
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if matched is not None:
        returned = len(features)
        collection["numberMatched"] = matched
        collection["numberReturned"] = returned
        collection["next_offset"] = offset + returned if offset + returned < matched else None
    return collection


@dataclass(frozen=True)
class Proportion:
    successes: int
    trials: int
    estimate: float | None
    low: float | None
    high: float | None


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> Proportion:
    """The Wilson score interval of a binomial proportion (95 % by default).

    Args:
        successes: Confirmed detections among the reviewed ones.
        trials: Reviewed detections.
        z: Normal quantile of the confidence level.

    Returns:
        The estimate and interval; all None when nothing was reviewed.

    Raises:
        ValueError: counts are negative or successes exceed trials.
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return Proportion(0, 0, None, None, None)
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return Proportion(successes, trials, p, max(0.0, centre - half), min(1.0, centre + half))


_MINING = np.array([230.0, 30.0, 30.0])
_NOT_MINING = np.array([40.0, 110.0, 230.0])


def label_overlay(
    image: NDArray[np.uint8],
    labels: NDArray[np.int32],
    edges: NDArray[np.bool_],
    marks: Mapping[int, int],
    alpha: float = 0.45,
) -> NDArray[np.uint8]:
    """`image` with people's labels: mining red, not mining blue, unlabelled untinted.

    Args:
        image: (H, W, 3) uint8 tile.
        labels: (H, W) superpixel index of each pixel.
        edges: (H, W) superpixel boundaries, drawn white.
        marks: superpixel index → 1 (mining) or 0 (not mining).
        alpha: tint opacity.
    """
    out = image.astype(np.float64)
    for index, label in marks.items():
        mask = labels == index
        colour = _MINING if label == 1 else _NOT_MINING
        out[mask] = out[mask] * (1 - alpha) + colour * alpha
    out[edges] = 255.0
    result: NDArray[np.uint8] = out.round().astype(np.uint8)
    return result
