"""The promotion gate: is a candidate classifier at least as good as the current one? Pure.

Evidence is the **gate share**: about a fifth of the labelled tiles, whole sites at a time, chosen
by a rule on the tile's place before any training (`in_gate_share`), so no classifier that
`amberscan train` makes (nor the backbone `amberscan finetune` makes) has seen it, whatever data
or seed it was trained with. Both models are scored there at their own
thresholds (what each would serve), and the difference is judged with a paired bootstrap over
sites (crops of one tile, and tiles of one site, are correlated, so sites are resampled).

The rule (`gate`), stated once:
- refused when the candidate's recall is lower beyond doubt: the upper end of the 95 % paired
  site-bootstrap interval of (candidate − current) recall is below zero;
- refused when the candidate's precision is lower than the current's by more than
  `precision_tolerance` (0.02 by default, about one more false positive in the gate share): a
  more permissive threshold is the failure this gate exists for, and it moves precision first;
- refused when the gate share holds no mining crop (nothing to judge recall on).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from amberscan.geo.tiles import Tile

GATE_FOLDS = 5
PRECISION_TOLERANCE = 0.02
BOOTSTRAP_ROUNDS = 2000

# The rule `in_gate_share` applies, recorded in every model's lineage: a model trained under
# another rule (or none) may have seen the gate share.
GATE_SHARE_RULE = (
    "gate-v2: int(sha256('amberscan-gate:' + cell), 16) % 5 == 0, cell = the tile centre's "
    "0.01-degree cell"
)
# What a fine-tuned backbone holds out: the gate share and the calibration share
# (`in_calibration_share`). Recorded with its weights and in its export's lineage.
CALIBRATION_FOLDS = 5
CALIBRATION_SHARE_RULE = (
    "calibration-v1: int(sha256('amberscan-calibration:' + cell), 16) % 5 == 0 outside the gate "
    "share, cell as for the gate share"
)
FINETUNE_HOLDOUT_RULE = f"{GATE_SHARE_RULE}; {CALIBRATION_SHARE_RULE}"
_CALIBRATION_SALT = "amberscan-calibration:"
# Salted, so the share is independent of any other split made by hashing (the texty-amber set as
# shared has already had a fifth of its tile ids taken out for an unseen check).
_SALT = "amberscan-gate:"
# Whole sites go to one side: mining pits cluster, and a tile has neighbours (73 of the shared
# set's 720 tiles have another within 300 m; one place may be imaged twice). Grouped by tile id,
# 6 of the 28 mining tiles of a gate share had a training tile within 300 m; by 0.01-degree cell
# (about 1.1 km north-south, 0.7 km east-west here), 2 of 23.
CELL_DEGREES = 0.01


def site_of(tile_id: str) -> str:
    """The site a tile belongs to: the 0.01-degree cell of its centre. Tile ids of the texty
    layout (`LAT_LON_date`) and of reviewed tiles (`QUADKEY-date`) name their place; any other
    id is its own site."""
    head = tile_id.split("_", 2)
    try:
        lat, lon = float(head[0]), float(head[1])
    except (IndexError, ValueError):
        quadkey = tile_id.split("-", 1)[0]
        if not quadkey or set(quadkey) - set("0123"):
            return tile_id
        lon, lat = Tile.from_quadkey(quadkey).center()
    return f"{math.floor(lat / CELL_DEGREES)}:{math.floor(lon / CELL_DEGREES)}"


def in_gate_share(tile_id: str) -> bool:
    """Whether tile `tile_id`'s crops belong to the gate share (about one site in five)."""
    digest = hashlib.sha256((_SALT + site_of(tile_id)).encode()).hexdigest()
    return int(digest, 16) % GATE_FOLDS == 0


def split_gate_share(tile_ids: Sequence[str]) -> tuple[list[int], list[int]]:
    """Indices of the samples to train on, and those of the gate share."""
    gate = [i for i, tile in enumerate(tile_ids) if in_gate_share(tile)]
    held = set(gate)
    return [i for i in range(len(tile_ids)) if i not in held], gate


def in_calibration_share(tile_id: str) -> bool:
    """Whether tile `tile_id`'s crops belong to the calibration share: about one site in five of
    those outside the gate share, which the fine-tune holds out so that the classifier's
    threshold is chosen on crops its backbone has not seen."""
    if in_gate_share(tile_id):
        return False
    digest = hashlib.sha256((_CALIBRATION_SALT + site_of(tile_id)).encode()).hexdigest()
    return int(digest, 16) % CALIBRATION_FOLDS == 0


@dataclass(frozen=True)
class Shares:
    """Indices of labelled samples by share: `fit` (the backbone fine-tunes on these),
    `calibration` (the classifier trains on these too, but the threshold is chosen on their
    out-of-fold scores) and `gate` (nothing trains on these)."""

    fit: list[int]
    calibration: list[int]
    gate: list[int]


def split_shares(tile_ids: Sequence[str]) -> Shares:
    """The three shares of `tile_ids`, site by site."""
    fit: list[int] = []
    calibration: list[int] = []
    gate: list[int] = []
    for i, tile in enumerate(tile_ids):
        if in_gate_share(tile):
            gate.append(i)
        elif in_calibration_share(tile):
            calibration.append(i)
        else:
            fit.append(i)
    return Shares(fit, calibration, gate)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def show(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class GateRow:
    """One model's figures on the gate share, at its own threshold."""

    version: str
    threshold: float
    precision: Interval
    recall: Interval
    true_positives: int
    false_positives: int
    false_negatives: int


@dataclass(frozen=True)
class GateDecision:
    current: GateRow
    candidate: GateRow
    recall_change: Interval  # candidate − current, with the paired site-bootstrap interval
    precision_change: Interval
    passed: bool
    reasons: list[str] = field(default_factory=list)
    crops: int = 0
    mining_crops: int = 0
    tiles: int = 0
    rule: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_site_counts(
    labels: NDArray[np.int64], positive: NDArray[np.bool_], groups: NDArray[np.int64], tiles: int
) -> NDArray[np.float64]:
    """Per site: (true positives, false positives, false negatives)."""
    counts = np.zeros((tiles, 3))
    np.add.at(counts[:, 0], groups, (positive & (labels == 1)).astype(float))
    np.add.at(counts[:, 1], groups, (positive & (labels == 0)).astype(float))
    np.add.at(counts[:, 2], groups, (~positive & (labels == 1)).astype(float))
    return counts


def _rates(counts: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(precision, recall) of rows of (tp, fp, fn) sums; precision 1 where nothing is flagged."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
    return precision, recall


def _interval(value: float, samples: NDArray[np.float64]) -> Interval:
    low, high = np.percentile(samples, [2.5, 97.5])
    return Interval(float(value), float(low), float(high))


def _bootstrap_weights(sites: int, rounds: int, seed: int) -> NDArray[np.float64]:
    """Per round, how often each site is drawn (`sites` draws with replacement)."""
    draws = np.random.default_rng(seed).integers(0, sites, size=(rounds, sites))
    return np.stack([np.bincount(d, minlength=sites) for d in draws]).astype(float)


def _judged(
    y: NDArray[np.int64],
    sites: Sequence[str],
    names: list[str],
    version: str,
    scores: NDArray[np.floating[Any]],
    threshold: float,
    weights: NDArray[np.float64],
) -> tuple[GateRow, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """One model's row, and its bootstrap samples of (precision, recall)."""
    index = {t: i for i, t in enumerate(names)}
    groups = np.array([index[t] for t in sites], dtype=np.int64)
    positive = np.asarray(scores, dtype=float) >= threshold
    counts = _per_site_counts(y, positive, groups, len(names))
    total = counts.sum(axis=0)
    precision, recall = _rates(total)
    sampled_p, sampled_r = _rates(weights @ counts)
    row = GateRow(
        version=version,
        threshold=float(threshold),
        precision=_interval(float(precision), sampled_p),
        recall=_interval(float(recall), sampled_r),
        true_positives=int(total[0]),
        false_positives=int(total[1]),
        false_negatives=int(total[2]),
    )
    return row, (sampled_p, sampled_r)


def judge(
    labels: Sequence[int] | NDArray[np.integer[Any]],
    tile_ids: Sequence[str],
    version: str,
    scores: NDArray[np.floating[Any]],
    threshold: float,
    *,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> GateRow:
    """One model's precision and recall on held-out crops at `threshold`, with 95 % bootstrap
    intervals over sites (`site_of`): what it is expected to do on places it has not seen."""
    sites = [site_of(t) for t in tile_ids]
    names = sorted(set(sites))
    y = np.asarray(labels, dtype=np.int64)
    weights = _bootstrap_weights(len(names), rounds, seed)
    return _judged(y, sites, names, version, scores, threshold, weights)[0]


def gate(
    labels: Sequence[int] | NDArray[np.integer[Any]],
    tile_ids: Sequence[str],
    current: tuple[str, NDArray[np.floating[Any]], float],
    candidate: tuple[str, NDArray[np.floating[Any]], float],
    *,
    precision_tolerance: float = PRECISION_TOLERANCE,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> GateDecision:
    """Judge `candidate` against `current` on the gate share's crops.

    Args:
        labels: 1 = mining, per crop.
        tile_ids: the tile of each crop (the bootstrap resamples their sites).
        current, candidate: (version, scores per crop, threshold) of each model.
    """
    y = np.asarray(labels, dtype=np.int64)
    sites = [site_of(t) for t in tile_ids]
    names = sorted(set(sites))
    weights = _bootstrap_weights(len(names), rounds, seed)  # the same draws for both: paired
    rows = []
    boot = []
    for version, scores, threshold in (current, candidate):
        row, sampled = _judged(y, sites, names, version, scores, threshold, weights)
        rows.append(row)
        boot.append(sampled)
    recall_change = _interval(rows[1].recall.value - rows[0].recall.value, boot[1][1] - boot[0][1])
    precision_change = _interval(
        rows[1].precision.value - rows[0].precision.value, boot[1][0] - boot[0][0]
    )
    reasons = []
    mining = int(y.sum())
    if mining == 0:
        reasons.append("the gate share holds no mining crop: recall cannot be judged")
    if recall_change.high < 0:
        reasons.append(
            f"recall is lower beyond the interval: change {recall_change.show()} "
            "(95 % paired site bootstrap) lies below zero"
        )
    if precision_change.value < -precision_tolerance:
        reasons.append(
            f"precision is lower by {-precision_change.value:.3f}, more than the "
            f"{precision_tolerance:.3f} allowed"
        )
    return GateDecision(
        current=rows[0],
        candidate=rows[1],
        recall_change=recall_change,
        precision_change=precision_change,
        passed=not reasons,
        reasons=reasons,
        crops=len(y),
        mining_crops=mining,
        tiles=len(names),
        rule=(
            "refused when (candidate − current) recall's 95 % paired site-bootstrap interval "
            f"lies below 0, or precision drops by more than {precision_tolerance:.3f}, on the "
            f"gate share ({GATE_SHARE_RULE})"
        ),
    )


def gate_table(decision: GateDecision) -> str:
    """Both rows side by side, then the verdict and its reasons."""
    lines = [
        f"promotion gate: {decision.crops} crops ({decision.mining_crops} mining) from "
        f"{decision.tiles} tiles of the gate share, 95 % site-bootstrap intervals",
        f"  {'':10} {'version':18} {'threshold':>9}  {'precision':24} {'recall':24} tp  fp  fn",
    ]
    for name, row in (("current", decision.current), ("candidate", decision.candidate)):
        lines.append(
            f"  {name:10} {row.version:18} {row.threshold:9.4f}  {row.precision.show():24} "
            f"{row.recall.show():24} {row.true_positives:<3} {row.false_positives:<3} "
            f"{row.false_negatives:<3}"
        )
    lines.append(
        f"  change     recall {decision.recall_change.show()}, "
        f"precision {decision.precision_change.show()}"
    )
    lines.append(f"  rule: {decision.rule}")
    if decision.passed:
        lines.append("  PASSED")
    else:
        lines += ["  REFUSED:", *[f"    - {reason}" for reason in decision.reasons]]
    return "\n".join(lines)
