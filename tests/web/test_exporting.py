"""Export shaping without servers: the fields of a row, CSV with WKT, the Arrow columns."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import shapely

from amberscan.web import exporting
from tests.web.test_core import _row

SQUARE = "POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))"


def _export_row(**over: object) -> dict[str, object]:
    row = _row(
        wkt=SQUARE,
        wkb=shapely.to_wkb(shapely.from_wkt(SQUARE)),
        threshold=0.7,
        threshold_source="implied",
        reviewed_at=None,
        review="unreviewed",
        exclusion_reason=None,
    )
    row.update(over)
    return row


def test_properties_hold_every_field_typed() -> None:
    p = exporting.properties(_export_row())
    assert list(p) == [name for name, _ in exporting.FIELDS]
    assert p["threshold"] == 0.7 and p["threshold_source"] == "implied"
    assert p["max_score"] == 0.9 and p["positives"] == 3 and p["flagged"] is True
    assert p["scores"] == "0.9000;0.8000;0.7000;0.1000"
    assert p["detected_at"] == datetime(2026, 1, 1, tzinfo=UTC) and p["reviewed_at"] is None
    assert (p["scan_id"], p["provider"], p["backbone_version"]) == ("s", "demo", "b1")


def test_csv_has_every_field_and_wkt_and_escapes_formulas() -> None:
    text = exporting.csv_text(
        [_export_row(reviewer="=HYPERLINK(1)", verdict="confirmed", review="confirmed")]
    )
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert list(row) == list(exporting.CSV_FIELDS)
    assert row["reviewer"] == "'=HYPERLINK(1)" and row["review"] == "confirmed"
    assert row["detected_at"] == "2026-01-01T00:00:00+00:00" and row["reviewed_at"] == ""
    assert row["flagged"] == "true" and row["threshold"] == "0.7"
    assert shapely.from_wkt(row["WKT"]).equals(shapely.box(0, 0, 1, 1))
    unknown = exporting.csv_text([_export_row(imagery_date="")], header=False)
    assert next(csv.reader(io.StringIO(unknown)))[2] == "unknown"


def test_feature_adds_the_threshold_to_the_maps_feature() -> None:
    f = exporting.feature(_export_row())
    assert f["geometry"]["type"] == "Polygon"
    assert f["properties"]["threshold"] == 0.7 and f["properties"]["scores"][0] == 0.9


def test_columns_carry_the_geometry_and_none_for_missing_values() -> None:
    cols = exporting.columns([_export_row(), _export_row(tile_id="1204", threshold=None)])
    assert list(cols) == ["geometry", *(name for name, _ in exporting.FIELDS)]
    assert shapely.from_wkb(cols["geometry"][1]).equals(shapely.box(0, 0, 1, 1))
    assert cols["tile_id"] == ["1203", "1204"] and cols["threshold"] == [0.7, None]


def test_file_names() -> None:
    assert exporting.filename("fgb", "damaged_areas") == "amberscan-damaged_areas.fgb"
    assert exporting.filename("gpkg", None) == "amberscan.gpkg"
