"""The rule for choosing recipes (pure): noise does not win."""

from __future__ import annotations

from amberscan.model.recipe import replaces_default


def test_a_gain_within_the_spread_between_runs_does_not_replace_the_default() -> None:
    default = [0.90, 0.95, 0.93]
    assert not replaces_default(default, [0.93, 0.97, 0.95])  # +0.023 mean, ranges 0.05 and 0.04
    assert replaces_default(default, [0.99, 1.0, 0.99])  # +0.067 mean, ranges 0.05 and 0.01


def test_one_run_per_recipe_never_replaces_the_default() -> None:
    assert not replaces_default([0.80], [0.99])
    assert not replaces_default([0.80, 0.81], [0.99])
