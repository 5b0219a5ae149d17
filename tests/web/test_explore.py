"""The explore page's data without servers: projection, outcomes, the labelled data lookup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amberscan.common.data import SharedDataMissing
from amberscan.common.settings import Settings, replace
from amberscan.web import explore

# ---------------------------------------------------------------- pure


@pytest.mark.parametrize("n", [0, 1, 2, 3, 12])
def test_projection_shape_and_range(n: int) -> None:
    vectors = np.random.default_rng(n).normal(size=(n, 20))
    coords, method = explore.project(vectors)
    assert coords.shape == (n, 2)
    assert np.all((coords >= 0) & (coords <= 1))
    assert method == ("none" if n < 2 else "PCA")
    if n == 1:
        assert coords.tolist() == [[0.5, 0.5]]


def test_projection_uses_tsne_from_30_points_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    # Two clusters far apart in 8 of 64 dimensions: they stay apart in the plot.
    vectors = rng.normal(size=(40, 64))
    vectors[20:, :8] += 12
    first, method = explore.project(vectors)
    again, _ = explore.project(vectors)
    assert method == "t-SNE"
    np.testing.assert_array_equal(first, again)
    a, b = first[:20].mean(axis=0), first[20:].mean(axis=0)
    spread = max(first[:20].std(axis=0).max(), first[20:].std(axis=0).max())
    assert np.linalg.norm(a - b) > 2 * spread


def test_projection_of_identical_or_constant_vectors() -> None:
    coords, _ = explore.project(np.ones((3, 5)))
    assert np.allclose(coords, 0.5)
    # A constant column next to a varying one: standardising must not divide by zero.
    coords, _ = explore.project(np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]]))
    assert np.isfinite(coords).all() and coords[:, 0].tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    ("positive", "label", "expected"),
    [
        (True, 1, "TP"),
        (False, 1, "FN"),
        (True, 0, "FP"),
        (False, 0, "TN"),
        (True, None, "positive"),
        (False, None, "negative"),
    ],
)
def test_outcome(positive: bool, label: int | None, expected: str) -> None:
    assert explore.outcome(positive, label) == expected


def test_describe_says_what_is_plotted() -> None:
    text = explore.describe("t-SNE", 40, "backbone/1", "scan s-1")
    assert text == "t-SNE of 40 superpixel feature vectors from backbone backbone/1, scan s-1"
    one = explore.describe("none", 1, "b/2", "scan s")
    assert one == "1 superpixel feature vector (too few to project) from backbone b/2, scan s"


def test_labelled_data_from_the_setting_or_beside_the_checkout(tmp_path: Path) -> None:
    assert explore.labelled_dir(replace(Settings(), explore={"data_dir": tmp_path})) == tmp_path
    with pytest.raises(FileNotFoundError, match="AMBERSCAN_EXPLORE_DATA_DIR=.* is not a folder"):
        explore.labelled_dir(replace(Settings(), explore={"data_dir": tmp_path / "missing"}))
    # Found beside a folder above the checkout, as ../shared is beside a clone.
    found = tmp_path / "shared" / "data" / "texty-amber" / "superpixels"
    found.mkdir(parents=True)
    checkout = tmp_path / "work" / "amberscan"
    assert explore.labelled_dir(Settings(), checkout) == found
    # The shared-data setting names the data set (its superpixels/ holds the crops).
    assert (
        explore.labelled_dir(replace(Settings(), data={"shared_data": found.parent}), checkout)
        == found
    )


def test_missing_labelled_data_names_where_it_looked(tmp_path: Path) -> None:
    checkout = tmp_path / "a" / "amberscan"
    with pytest.raises(SharedDataMissing) as error:
        explore.labelled_dir(Settings(), checkout)
    message = str(error.value)
    assert "AMBERSCAN_SHARED_DATA" in message
    for folder in (tmp_path / "a", tmp_path):
        assert str(folder / "shared" / "data" / "texty-amber" / "superpixels") in message
