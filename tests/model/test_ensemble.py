"""Ensembles of fine-tunes (pure): the combining rule and the nested CV's resume bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.model.ensemble import (
    Piece,
    Spread,
    best_next_fold_seeds,
    complete_folds,
    describe,
    ensemble_replaces_single,
    left,
    mean_scores,
    plan,
)

probabilities = st.lists(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=20
)


def test_the_ensemble_score_is_the_mean_of_its_members_probabilities() -> None:
    a = np.array([0.1, 0.9, 0.5])
    b = np.array([0.3, 0.7, 0.0])
    c = np.array([0.2, 0.2, 1.0])
    assert mean_scores([a, b, c]) == pytest.approx([0.2, 0.6, 0.5])
    assert mean_scores([a]) == pytest.approx(a)


@given(
    st.integers(min_value=1, max_value=5).flatmap(
        lambda k: st.lists(probabilities, min_size=k, max_size=k)
    )
)
def test_the_ensemble_score_lies_between_its_members_and_ignores_their_order(
    members: list[list[float]],
) -> None:
    n = min(len(m) for m in members)
    arrays = [np.array(m[:n]) for m in members]
    combined = mean_scores(arrays)
    stacked = np.stack(arrays)
    assert np.all(combined >= stacked.min(0) - 1e-12)
    assert np.all(combined <= stacked.max(0) + 1e-12)
    assert mean_scores(arrays[::-1]) == pytest.approx(combined)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([], "at least one"),
        ([np.array([0.1, 0.2]), np.array([0.1])], "one length"),
        ([np.array([[0.1, 0.2]])], "1-D"),
        ([np.array([0.1, np.nan])], "member 0: 1 scores are not probabilities"),
        ([np.array([0.1, 0.2]), np.array([0.5, 1.5])], "member 1"),
        ([np.array([-0.1])], "not probabilities"),
    ],
)
def test_scores_that_cannot_be_averaged_are_refused(
    members: list[np.ndarray], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mean_scores(members)


def test_a_piece_round_trips_through_its_cached_name() -> None:
    piece = Piece(fold_seed=2, fold=4, seed=11)
    assert piece.name == "fs2-fold4-seed11"
    assert Piece.parse(piece.name) == piece
    with pytest.raises(ValueError, match="does not name a piece"):
        Piece.parse(".fs0-fold1-seed2.123.partial")


def test_the_plan_finishes_a_fold_for_every_seed_before_the_next_fold() -> None:
    assert plan(0, 3, [0, 1]) == [
        Piece(0, 0, 0),
        Piece(0, 0, 1),
        Piece(0, 1, 0),
        Piece(0, 1, 1),
        Piece(0, 2, 0),
        Piece(0, 2, 1),
    ]
    assert plan(1, 5, [7], only_folds=[3, 1]) == [Piece(1, 1, 7), Piece(1, 3, 7)]


@pytest.mark.parametrize(
    ("seeds", "only", "message"),
    [([0, 0], None, "distinct"), ([], None, "at least one"), ([0], [5], "not among")],
)
def test_a_plan_that_cannot_be_run_is_refused(
    seeds: list[int], only: list[int] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan(0, 5, seeds, only)


def test_a_resumed_run_does_only_what_is_not_cached_in_the_plans_order() -> None:
    planned = plan(0, 5, [0, 1, 2])
    # Pieces of another fold seed or seed are cached too: they are not this run's.
    cached = [Piece(0, 0, 0), Piece(0, 0, 1), Piece(0, 0, 2), Piece(0, 1, 0), Piece(1, 1, 1)]
    todo = left(planned, cached)
    assert todo[:3] == [Piece(0, 1, 1), Piece(0, 1, 2), Piece(0, 2, 0)]
    assert len(todo) == 15 - 4
    assert set(todo) | {p for p in cached if p.fold_seed == 0} == set(planned)
    assert left(planned, planned) == []


def test_a_fold_is_complete_when_every_seed_of_the_ensemble_is_cached() -> None:
    cached = [Piece(0, 0, 0), Piece(0, 0, 1), Piece(0, 0, 2), Piece(0, 1, 0), Piece(0, 1, 2)]
    cached += [Piece(1, 1, 0), Piece(1, 1, 1), Piece(1, 1, 2)]
    assert complete_folds(cached, 0, [0, 1, 2]) == [0]
    assert complete_folds(cached, 0, [0, 2]) == [0, 1]
    assert complete_folds(cached, 1, [0, 1, 2]) == [1]
    assert complete_folds(cached, 2, [0]) == []


def test_cached_and_left_pieces_are_described_by_fold_seed_and_fold() -> None:
    pieces = [Piece(0, 1, 0), Piece(0, 0, 2), Piece(0, 0, 0), Piece(1, 3, 1)]
    assert (
        describe(pieces)
        == "fold seed 0: fold 0 seeds 0 2; fold 1 seed 0  fold seed 1: fold 3 seed 1"
    )
    assert describe([]) == "none"


def test_a_spread_reports_mean_deviation_and_range() -> None:
    spread = Spread.of([0.80, 0.90, 0.85])
    assert spread.mean == pytest.approx(0.85)
    assert spread.sd == pytest.approx(0.05)
    assert spread.range == pytest.approx(0.10)
    assert str(spread) == "0.850 ± 0.050 (0.800–0.900)"
    assert Spread.of([0.7]).sd == 0.0


def test_the_ensemble_must_beat_the_spread_between_fine_tune_seeds_too() -> None:
    ensembles = {0: 0.93, 1: 0.94}
    # Fold seeds alone spread 0.01 and the gain over their mean is 0.025: the ensemble would
    # win if one seed stood for "one model"...
    assert ensemble_replaces_single({0: [0.90], 1: [0.91]}, ensembles)
    # ...but the fine-tune seeds spread 0.90-0.94 on the same folds: within the noise.
    assert not ensemble_replaces_single({0: [0.90, 0.94, 0.91], 1: [0.91, 0.90, 0.93]}, ensembles)
    assert ensemble_replaces_single({0: [0.80, 0.81, 0.80], 1: [0.81, 0.80, 0.81]}, ensembles)


def test_the_ensemble_is_judged_only_on_fold_seeds_where_both_are_measured() -> None:
    singles = {0: [0.80, 0.81], 1: [0.80, 0.81], 2: [0.99, 0.99]}
    assert ensemble_replaces_single(singles, {0: 0.95, 1: 0.95})
    # One fold seed in common is one run: never enough.
    assert not ensemble_replaces_single(singles, {0: 0.95, 5: 0.99})


def test_a_further_fold_seed_is_searched_for_the_outcome_that_would_make_the_ensemble_win() -> None:
    members = 3
    # Singles spread 0.07 and the ensemble gains 0.025: one more fold seed cannot change that.
    singles = {0: [0.91, 0.93, 0.87], 1: [0.88, 0.88, 0.94]}
    ensembles = {0: 0.928, 1: 0.928}
    assert not ensemble_replaces_single(singles, ensembles)
    best = best_next_fold_seeds(singles, ensembles, members)
    assert not best.wins
    # The search is checked against the rule itself at the point it found...
    after = {**singles, 2: [best.singles] * members}
    assert ensemble_replaces_single(after, {**ensembles, 2: best.ensemble}) == best.wins
    # ...and no other outcome of the next fold seed (unequal singles too) does better.
    rng = np.random.default_rng(0)
    for _ in range(2000):
        new = list(rng.uniform(0.0, 1.0, members))
        assert not ensemble_replaces_single({**singles, 2: new}, {**ensembles, 2: rng.uniform()})

    # Two more fold seeds, both at the best case, weigh more against the two measured: they
    # could.
    two = best_next_fold_seeds(singles, ensembles, members, more=2)
    assert two.wins
    new = [two.singles] * members
    assert ensemble_replaces_single(
        {**singles, 2: new, 3: new}, {**ensembles, 2: two.ensemble, 3: two.ensemble}
    )

    # A narrow spread with a gain close to it: a further fold seed could still make it win.
    close = {0: [0.90, 0.92, 0.90], 1: [0.92, 0.91, 0.90]}
    near = {0: 0.925, 1: 0.926}
    assert not ensemble_replaces_single(close, near)
    best = best_next_fold_seeds(close, near, members)
    assert best.wins
    assert ensemble_replaces_single(
        {**close, 2: [best.singles] * members}, {**near, 2: best.ensemble}
    )


def test_the_best_case_needs_a_measured_fold_seed_and_a_member() -> None:
    with pytest.raises(ValueError, match="no fold seed"):
        best_next_fold_seeds({0: [0.9]}, {1: 0.9}, 3)
    with pytest.raises(ValueError, match="at least one fine-tune"):
        best_next_fold_seeds({0: [0.9]}, {0: 0.9}, 0)
    with pytest.raises(ValueError, match="at least one more fold seed"):
        best_next_fold_seeds({0: [0.9]}, {0: 0.9}, 3, more=0)
