"""The review queue's ordering rule, on scores (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.web.queue import Candidate, Top, decisive_score, order, priority


def tile(name: str, scores: list[float], **kw: object) -> Candidate:
    threshold = float(kw.pop("threshold", 0.5))  # type: ignore[arg-type]
    m = int(kw.pop("m", 2))  # type: ignore[call-overload]
    flagged = sum(s >= threshold for s in scores) > m
    return Candidate(name, "2015-06-01", "clf-1", flagged, scores, threshold, m, **kw)  # type: ignore[arg-type]


@given(
    st.lists(st.floats(0, 1), min_size=0, max_size=40),
    st.floats(0.01, 0.99),
    st.integers(0, 5),
)
def test_the_decisive_score_flips_the_verdict(scores: list[float], t: float, m: int) -> None:
    """Flagged (more than m superpixels at or above t) exactly when the decisive score is."""
    decisive = decisive_score(scores, m)
    flagged = sum(s >= t for s in scores) > m
    assert flagged == (decisive is not None and decisive >= t)


@pytest.mark.parametrize(
    ("scores", "m", "expected"),
    [
        ([0.9, 0.8, 0.7, 0.1], 2, 0.7),
        ([0.9, 0.8, 0.7, 0.6, 0.1], 3, 0.6),
        ([0.2, 0.9], 0, 0.9),
        ([0.9, 0.8], 2, None),
    ],
)
def test_decisive_score(scores: list[float], m: int, expected: float | None) -> None:
    assert decisive_score(scores, m) == expected


def test_closer_to_the_decision_comes_first() -> None:
    far_out = tile("a-far", [0.99, 0.98, 0.97, 0.96])  # decisive 0.97: 0.47 above
    on_edge = tile("b-edge", [0.9, 0.9, 0.52, 0.1])  # decisive 0.52: just flagged
    just_under = tile("c-under", [0.9, 0.9, 0.45, 0.1])  # decisive 0.45: two positives of 3
    clear_no = tile("d-no", [0.1, 0.05, 0.02, 0.01])  # decisive 0.02: far below
    ranked = [t.tile_id for t, _ in order([far_out, clear_no, just_under, on_edge])]
    # on_edge: closeness 0.92 + 1 flagged; far_out 0 + 1 flagged; just_under 0.8; clear_no 0.
    assert ranked == ["b-edge", "a-far", "c-under", "d-no"]
    assert priority(on_edge).value == pytest.approx(1 - 0.02 / 0.25 + 1)
    assert priority(just_under).value == pytest.approx(1 - 0.05 / 0.25)
    assert priority(clear_no).value == 0


def test_disagreements_add_to_the_priority() -> None:
    certain = [0.1, 0.05, 0.02, 0.01]
    candidate = tile("z-candidate", certain, other_flagged=True)
    vintage = tile("y-vintage", certain, previous_flagged=True)
    close = tile("x-close", [0.9, 0.9, 0.5, 0.1])  # on the threshold, flagged: 1 + 1
    agreeing = tile("w-agree", certain, other_flagged=False, previous_flagged=False)
    ranked = [t.tile_id for t, p in order([agreeing, vintage, close, candidate])]
    assert ranked == ["x-close", "z-candidate", "y-vintage", "w-agree"]
    assert priority(candidate).value == 1 and priority(vintage).value == 0.5
    assert priority(agreeing).reasons == []
    both = tile("v-both", certain, other_flagged=True, previous_flagged=True)
    assert priority(both).value == 1.5 and len(priority(both).reasons) == 2


def test_reviewed_tiles_leave_the_queue_unless_flagged_again() -> None:
    scores = [0.9, 0.9, 0.9, 0.9]
    reviewed = tile("a", scores, reviewed=True)
    reflagged = tile("b", scores, reviewed=True, reflagged=True)
    fresh = tile("c", scores)
    ranked = [(t.tile_id, p.value) for t, p in order([reviewed, reflagged, fresh])]
    # reflagged: +1; fresh: flagged and unreviewed, +1; the decisive 0.9 is 0.4 away: a tie.
    assert ranked == [("b", 1.0), ("c", 1.0)]


def test_ties_break_by_tile_then_date() -> None:
    a = Candidate("t1", "2016-01-01", "m", False, [0.1], 0.5, 2)
    b = Candidate("t1", "2015-01-01", "m", False, [0.1], 0.5, 2)
    c = Candidate("t0", "2017-01-01", "m", False, [0.1], 0.5, 2)
    assert [(t.tile_id, t.imagery_date) for t, _ in order([a, b, c])] == [
        ("t0", "2017-01-01"),
        ("t1", "2015-01-01"),
        ("t1", "2016-01-01"),
    ]


candidates = st.builds(
    Candidate,
    tile_id=st.sampled_from([f"t{i}" for i in range(8)]),
    imagery_date=st.sampled_from(["2015-06-01", "2016-06-01"]),
    model_version=st.just("clf-1"),
    flagged=st.booleans(),
    scores=st.lists(st.sampled_from([0.1, 0.3, 0.45, 0.5, 0.6, 0.9]), max_size=6),
    threshold=st.sampled_from([0.4, 0.5]),
    min_positives=st.integers(0, 3),
    other_flagged=st.none() | st.booleans(),
    previous_flagged=st.none() | st.booleans(),
    reviewed=st.booleans(),
    reflagged=st.booleans(),
)


@given(st.lists(candidates, max_size=60), st.integers(1, 7))
def test_the_kept_head_is_the_head_of_the_order(tiles: list[Candidate], limit: int) -> None:
    """Streamed through `Top`, the queue's head and count are those of sorting it whole (many
    ties: equal priorities must fall back to tile and date the same way)."""
    top: Top[int] = Top(limit)
    for i, t in enumerate(tiles):
        top.add(t, i)
    whole = order(tiles)
    assert top.matched == len(whole)
    assert [(t, p) for t, p, _ in top.head()] == whole[:limit]
    assert all(tiles[i] is t for t, _, i in top.head())
