"""The promotion gate (pure): the gate share rule, the paired tile bootstrap, the refusal rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.geo.tiles import Tile
from amberscan.model.dataset import list_labelled
from amberscan.model.promotion import (
    FINETUNE_HOLDOUT_RULE,
    GATE_SHARE_RULE,
    gate,
    gate_table,
    in_calibration_share,
    in_gate_share,
    site_of,
    split_gate_share,
    split_shares,
)


def test_the_gate_share_is_about_a_fifth_of_the_sites_and_keeps_a_site_whole() -> None:
    rng = np.random.default_rng(0)
    places = rng.uniform([50.0, 24.0], [52.0, 28.0], size=(5000, 2))
    tiles = [f"{lat:.9f}_{lon:.9f}_11_Oct_2014_GMT" for lat, lon in places]
    share = np.mean([in_gate_share(t) for t in tiles])
    assert 0.17 < share < 0.23
    assert "sha256" in GATE_SHARE_RULE
    # One place imaged twice, and a neighbour 100 m away in the same cell: one side.
    assert in_gate_share("50.785205_26.694940_11_Oct_2014_GMT") == in_gate_share(
        "50.785205_26.694940_02_Jun_2016_GMT"
    )
    assert site_of("50.7852_26.6949_x") == site_of("50.7860_26.6951_y")
    # A reviewed tile (quadkey-date) is placed by its quadkey's centre.
    tile = Tile(37626, 22003, 16)
    lon, lat = tile.center()
    assert site_of(f"{tile.quadkey}-2014-10-11") == site_of(f"{lat}_{lon}_x")
    # Ids that name no place are their own site.
    assert site_of("tile7") == "tile7"


@given(st.lists(st.sampled_from([f"tile{i}" for i in range(40)]), min_size=1, max_size=200))
def test_split_keeps_every_tile_whole_on_one_side(tile_ids: list[str]) -> None:
    train, held = split_gate_share(tile_ids)
    assert sorted(train + held) == list(range(len(tile_ids)))
    assert not {tile_ids[i] for i in train} & {tile_ids[i] for i in held}


def test_the_calibration_share_is_a_fifth_of_the_rest_independent_of_the_gate() -> None:
    rng = np.random.default_rng(1)
    places = rng.uniform([50.0, 24.0], [52.0, 28.0], size=(5000, 2))
    tiles = [f"{lat:.9f}_{lon:.9f}_11_Oct_2014_GMT" for lat, lon in places]
    gate_flags = np.array([in_gate_share(t) for t in tiles])
    calibration = np.array([in_calibration_share(t) for t in tiles])
    assert not (gate_flags & calibration).any()
    assert 0.17 < calibration[~gate_flags].mean() < 0.23
    assert GATE_SHARE_RULE in FINETUNE_HOLDOUT_RULE and "calibration" in FINETUNE_HOLDOUT_RULE
    # A site is whole in one share.
    assert in_calibration_share("50.7852_26.6949_x") == in_calibration_share("50.7860_26.6951_y")


@given(st.lists(st.sampled_from([f"{i}.005_{i}.005_x" for i in range(60)]), max_size=200))
def test_the_three_shares_part_the_samples_by_site(tile_ids: list[str]) -> None:
    shares = split_shares(tile_ids)
    assert sorted(shares.fit + shares.calibration + shares.gate) == list(range(len(tile_ids)))
    sides = [
        {site_of(tile_ids[i]) for i in s} for s in (shares.fit, shares.calibration, shares.gate)
    ]
    assert not sides[0] & sides[1] and not sides[0] & sides[2] and not sides[1] & sides[2]
    assert all(in_gate_share(tile_ids[i]) for i in shares.gate)
    assert all(in_calibration_share(tile_ids[i]) for i in shares.calibration)


def test_the_shared_set_has_mining_tiles_in_the_calibration_share(shared_data) -> None:  # type: ignore[no-untyped-def]
    crops = list_labelled(shared_data / "superpixels")
    shares = split_shares([c.tile_id for c in crops])
    mining = [crops[i] for i in shares.calibration if crops[i].label == 1]
    # Enough to choose a threshold on: dozens of mining crops from many tiles.
    assert len(mining) >= 25
    assert len({c.tile_id for c in mining}) >= 15


def test_the_shared_set_has_mining_tiles_in_the_gate_share(shared_data) -> None:  # type: ignore[no-untyped-def]
    crops = list_labelled(shared_data / "superpixels")
    _, held = split_gate_share([c.tile_id for c in crops])
    mining = [crops[i] for i in held if crops[i].label == 1]
    # Enough evidence to judge recall on: dozens of mining crops from many tiles.
    assert len(mining) >= 25
    assert len({c.tile_id for c in mining}) >= 15
    # No training tile shares a site with a gate tile.
    train, _ = split_gate_share([c.tile_id for c in crops])
    assert not {site_of(crops[i].tile_id) for i in train} & {
        site_of(crops[i].tile_id) for i in held
    }


def toy_evidence(seed: int = 0, tiles: int = 60) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Labels, tile ids and well-separated scores: 4 crops a tile, a third of tiles mining."""
    rng = np.random.default_rng(seed)
    labels, tile_ids, scores = [], [], []
    for t in range(tiles):
        mining = t % 3 == 0
        for _ in range(4):
            label = int(mining and rng.random() < 0.7)
            labels.append(label)
            tile_ids.append(f"t{t}")
            scores.append(rng.normal(0.8 if label else 0.2, 0.1))
    return np.array(labels), tile_ids, np.clip(np.array(scores), 0, 1)


def test_the_same_model_passes_against_itself() -> None:
    labels, tiles, scores = toy_evidence()
    decision = gate(labels, tiles, ("a", scores, 0.5), ("b", scores, 0.5))
    assert decision.passed, decision.reasons
    assert decision.recall_change.value == 0
    assert decision.recall_change.low == decision.recall_change.high == 0  # paired: same draws
    assert decision.current.recall.value == decision.candidate.recall.value
    assert decision.current.recall.low <= decision.current.recall.value
    assert decision.current.recall.value <= decision.current.recall.high


def test_a_model_trained_on_swapped_labels_is_refused_for_recall() -> None:
    labels, tiles, scores = toy_evidence()
    decision = gate(labels, tiles, ("good", scores, 0.5), ("swapped", 1 - scores, 0.5))
    assert not decision.passed
    assert decision.recall_change.high < 0
    assert any("recall is lower" in r for r in decision.reasons)
    text = gate_table(decision)
    assert "good" in text and "swapped" in text and "REFUSED" in text


def test_a_more_permissive_threshold_is_refused_for_precision() -> None:
    labels, tiles, scores = toy_evidence(seed=3)
    current = ("current", scores, 0.5)
    permissive = ("permissive", scores, 0.3)  # more positives: recall up, precision down
    decision = gate(labels, tiles, current, permissive)
    assert decision.candidate.recall.value >= decision.current.recall.value
    assert decision.candidate.false_positives > decision.current.false_positives
    assert not decision.passed
    assert any("precision is lower" in r for r in decision.reasons)


def test_one_missed_crop_more_is_within_the_interval() -> None:
    labels, tiles, scores = toy_evidence(seed=5)
    worse = scores.copy()
    miss = int(np.flatnonzero((labels == 1) & (scores >= 0.5))[0])
    worse[miss] = 0.0
    decision = gate(labels, tiles, ("current", scores, 0.5), ("candidate", worse, 0.5))
    assert decision.recall_change.value < 0
    assert decision.recall_change.high >= 0  # not lower beyond the interval
    assert decision.passed


def test_evidence_without_mining_is_refused() -> None:
    labels = np.zeros(20, dtype=int)
    tiles = [f"t{i % 5}" for i in range(20)]
    scores = np.zeros(20)
    decision = gate(labels, tiles, ("a", scores, 0.5), ("b", scores, 0.5))
    assert not decision.passed
    assert "no mining crop" in decision.reasons[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_bootstrap_is_repeatable(seed: int) -> None:
    labels, tiles, scores = toy_evidence(seed)
    one = gate(labels, tiles, ("a", scores, 0.5), ("b", scores * 0.9, 0.5), seed=seed)
    two = gate(labels, tiles, ("a", scores, 0.5), ("b", scores * 0.9, 0.5), seed=seed)
    assert one == two
