"""Ensembles of fine-tunes (#24): the rule that combines their scores, and the bookkeeping of the
nested CV that measures an ensemble against one model, one fine-tune at a time.

Averaging beats picking when labels are few: K fine-tunes of one recipe from different seeds
(or of two backbones) disagree on the crops none of them is sure of, and the mean of their
probabilities is steadier than any one of them. `benchmarks/finetune_cv.py --finetune-seeds`
measures it; a fine-tune is 20-25 minutes of one core, so the measurement is cut into pieces
(fold seed, fold, fine-tune seed) cached one by one, and a run that stops resumes where it
stopped. Pure: arrays and small dataclasses in and out, no files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from amberscan.model.recipe import Draws, gain_and_spread, replaces_default


def mean_scores(members: Sequence[NDArray[np.floating[Any]]]) -> NDArray[np.float64]:
    """The ensemble's probability of each sample: the mean of its members' probabilities.

    For the XGBoost-on-features variant each member is one fine-tune's backbone with its own
    XGBoost; the mean is taken over their probabilities, not over their features (features of
    two fine-tunes do not share a space).

    Raises:
        ValueError: no member, members of different shapes, or a score that is not a
            probability (NaN, below 0, above 1).
    """
    if not members:
        raise ValueError("an ensemble needs at least one member's scores")
    stacked = [np.asarray(m, dtype=np.float64) for m in members]
    shapes = {m.shape for m in stacked}
    if len(shapes) != 1 or stacked[0].ndim != 1:
        raise ValueError(f"members' scores must be 1-D arrays of one length, got shapes {shapes}")
    for i, member in enumerate(stacked):
        bad = ~((member >= 0.0) & (member <= 1.0))  # NaN fails both comparisons
        if bad.any():
            raise ValueError(
                f"member {i}: {int(bad.sum())} scores are not probabilities in [0, 1] "
                f"(first at sample {int(np.argmax(bad))}: {member[np.argmax(bad)]})"
            )
    mean: NDArray[np.float64] = np.mean(stacked, axis=0)
    return mean


_NAME = re.compile(r"^fs(\d+)-fold(\d+)-seed(\d+)$")


@dataclass(frozen=True, order=True)
class Piece:
    """One fine-tune of the nested CV: the fold assignment's seed, the fold held out, and the
    fine-tune's seed. Its out-of-fold scores are cached under `name`."""

    fold_seed: int
    fold: int
    seed: int

    @property
    def name(self) -> str:
        return f"fs{self.fold_seed}-fold{self.fold}-seed{self.seed}"

    @classmethod
    def parse(cls, name: str) -> Piece:
        """The piece a cached file's stem names (`fs0-fold3-seed2`)."""
        match = _NAME.match(name)
        if match is None:
            raise ValueError(f"{name!r} does not name a piece (fs<N>-fold<N>-seed<N>)")
        fold_seed, fold, seed = (int(g) for g in match.groups())
        return cls(fold_seed, fold, seed)


def plan(
    fold_seed: int, folds: int, seeds: Sequence[int], only_folds: Iterable[int] | None = None
) -> list[Piece]:
    """The pieces of one fold seed's run, fold by fold: every seed of fold 0 before fold 1, so
    that a run stopped half way leaves whole folds, on which single and ensemble compare."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"fine-tune seeds must be distinct and at least one, got {list(seeds)}")
    wanted = set(range(folds)) if not only_folds else set(only_folds)
    outside = wanted - set(range(folds))
    if outside:
        raise ValueError(f"folds {sorted(outside)} are not among the {folds} folds (0-based)")
    return [Piece(fold_seed, f, s) for f in sorted(wanted) for s in seeds]


def left(planned: Sequence[Piece], cached: Iterable[Piece]) -> list[Piece]:
    """The planned pieces not cached yet, in the plan's order."""
    done = set(cached)
    return [p for p in planned if p not in done]


def complete_folds(cached: Iterable[Piece], fold_seed: int, seeds: Sequence[int]) -> list[int]:
    """The folds of `fold_seed` whose every fine-tune seed in `seeds` is cached."""
    have: dict[int, set[int]] = {}
    for p in cached:
        if p.fold_seed == fold_seed:
            have.setdefault(p.fold, set()).add(p.seed)
    return sorted(f for f, s in have.items() if set(seeds) <= s)


def describe(pieces: Iterable[Piece]) -> str:
    """Pieces grouped for a person: `fold seed 0: fold 0 seeds 0 1 2; fold 1 seed 0`."""
    grouped: dict[int, dict[int, list[int]]] = {}
    for p in sorted(set(pieces)):
        grouped.setdefault(p.fold_seed, {}).setdefault(p.fold, []).append(p.seed)
    if not grouped:
        return "none"
    return "  ".join(
        f"fold seed {fs}: "
        + "; ".join(
            f"fold {f} seed{'s' if len(s) > 1 else ''} {' '.join(map(str, s))}"
            for f, s in folds.items()
        )
        for fs, folds in grouped.items()
    )


@dataclass(frozen=True)
class Spread:
    """A figure over several draws (fine-tune seeds, fold seeds): mean, sd, min, max."""

    mean: float
    sd: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread needs at least one value")
        v = np.asarray(values, dtype=np.float64)
        sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        return cls(float(v.mean()), sd, float(v.min()), float(v.max()))

    @property
    def range(self) -> float:
        return self.high - self.low

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.sd:.3f} ({self.low:.3f}–{self.high:.3f})"


def ensemble_replaces_single(
    singles: Mapping[int, Sequence[float]], ensembles: Mapping[int, float]
) -> bool:
    """Whether the ensemble should be served instead of one model: the recipe rule
    (`model/recipe.py`, `replaces_default`) with one fine-tune as the default.

    `singles` holds, per fold seed, the nested-CV recall of each single fine-tune (one per
    fine-tune seed), `ensembles` the ensemble's recall per fold seed (the mean of those same
    fine-tunes' scores, on the same folds). Each single fine-tune is a draw of "one model", so
    the default's range takes in the spread between fine-tune seeds as well as between fold
    assignments: the ensemble wins only when its mean gain beats both. Only fold seeds where
    both are measured count, and at least two are needed."""
    common = sorted(set(singles) & set(ensembles))
    return replaces_default(
        [r for fs in common for r in singles[fs]], [ensembles[fs] for fs in common]
    )


@dataclass(frozen=True)
class BestCase:
    """The next fold seed most favourable to the ensemble: its single fine-tunes' recall (all
    equal), the ensemble's recall, and the rule's gain and spread after it."""

    singles: float
    ensemble: float
    gain: float
    spread: float

    @property
    def wins(self) -> bool:
        return self.gain > self.spread


def best_next_fold_seeds(
    singles: Mapping[int, Sequence[float]],
    ensembles: Mapping[int, float],
    members: int,
    more: int = 1,
    step: float = 0.001,
) -> BestCase:
    """Whether `more` further fold seeds could still make the ensemble win: their outcome most
    favourable to it, each with `members` single fine-tunes, over every recall in [0, 1] (on a
    grid of `step`), judged by the rule's own sides (`recipe.gain_and_spread`).

    Why it is exact on the grid: the rule compares a gain of means with the wider range. For a
    given mean of the new singles, making them all equal keeps the singles' range smallest, and
    so for the new ensembles; the best case has two unknowns, searched exhaustively. When it
    does not win, those fold seeds cannot change the decision whatever they measure, and the
    measurement may stop short of them (more fold seeds than `more` still could)."""
    common = sorted(set(singles) & set(ensembles))
    if not common:
        raise ValueError("no fold seed with both singles and an ensemble measured")
    if members < 1 or more < 1:
        raise ValueError(
            f"at least one more fold seed of at least one fine-tune, got {more} of {members}"
        )
    singles_now = Draws.of([r for fs in common for r in singles[fs]])
    ensembles_now = Draws.of([ensembles[fs] for fs in common])
    grid = np.linspace(0.0, 1.0, int(round(1.0 / step)) + 1)
    v, e = np.meshgrid(grid, grid, indexing="ij")  # new singles' recall, new ensemble's recall
    gain, spread = gain_and_spread(
        singles_now.with_more(v, more * members), ensembles_now.with_more(e, more)
    )
    best = np.unravel_index(np.argmax(gain - spread), gain.shape)
    return BestCase(float(v[best]), float(e[best]), float(gain[best]), float(spread[best]))
