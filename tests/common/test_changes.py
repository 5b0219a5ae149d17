"""The change computation's pure part: comparisons, classification, formatting."""

from __future__ import annotations

import csv
import io

import pytest

from amberscan.common import changes


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        (None, True, "first"),
        (None, False, "first"),
        (False, True, "new"),
        (True, False, "gone"),
        (True, True, "same"),
        (False, False, "same"),
    ],
)
def test_classify(before: bool | None, after: bool, kind: str) -> None:
    assert changes.classify(before, after) == kind


def test_comparison_of_vintages_or_models() -> None:
    spec = changes.comparison(("2015", "2016"), [])
    assert (spec.before, spec.after, spec.by_model) == ("2015", "2016", False)
    assert spec.describe() == "vintage 2015 → 2016"
    within = changes.comparison(("2015", "2016"), ["m-1"])
    assert within.model == "m-1" and within.describe() == "vintage 2015 → 2016 (model m-1)"
    models = changes.comparison(None, ["a", "b"], "2016")
    assert models.by_model and models.describe() == "model a → b on 2016 imagery"
    for years, models_, words in (
        (None, [], "give two vintages"),
        (None, ["a"], "give two vintages"),
        (("2015", "2015"), [], "both 2015"),
        (("15", "2016"), [], "four-digit"),
        (("2015", "2016"), ["a", "b"], "not both"),
        (None, ["a", "a"], "both models are a"),
        (None, ["a b", "c"], "not a model version"),
    ):
        with pytest.raises(changes.BadComparison, match=words):
            changes.comparison(years, models_)


def _row(before: bool, after: bool) -> dict[str, object]:
    return {
        "tile_id": "120",
        "before_date": "2015-06-01",
        "before_model": "m",
        "before_flagged": before,
        "before_positives": 4 if before else 0,
        "before_hectares": 1.5 if before else 0.0,
        "after_date": "2016-06-01",
        "after_model": "m",
        "after_flagged": after,
        "after_positives": 5 if after else 1,
        "after_hectares": 2.25 if after else 0.0,
        "geojson": '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}',
    }


def test_change_rows_count_the_hectares_gained_or_lost() -> None:
    new, gone = changes.change_row(_row(False, True)), changes.change_row(_row(True, False))
    assert (new["change"], new["hectares"]) == ("new", 2.25)
    assert (gone["change"], gone["hectares"]) == ("gone", 1.5)
    feature = changes.feature(new)
    assert feature["id"] == "120" and feature["geometry"]["type"] == "Polygon"
    assert "geometry" not in feature["properties"]
    (row,) = csv.DictReader(io.StringIO(changes.csv_lines([new])))
    assert (
        row["change"] == "new"
        and row["after_flagged"] == "true"
        and row["before_flagged"] == "false"
    )
    text = changes.table([new, gone])
    assert "new: 1 tiles, 2.25 ha" in text and "gone: 1 tiles, 1.50 ha" in text


def test_change_clause_names_the_previous_verdict_once() -> None:
    previous = changes.previous_flagged("d", model_param=True)
    assert previous.count("%s") == 2
    for kind in changes.CHANGE_FILTERS:
        assert changes.change_clause(kind, "d", previous).count(previous) == 1
