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


def _report(**estimate: object) -> dict[str, object]:
    """A design's report (`area_queries.report`) as the `area_estimate` layer takes it."""
    interval = {"estimate": 12.5, "se": 4.8734, "low": 2.9484, "high": 22.0516}
    return {
        "id": 7,
        "kind": "change",
        "year_before": "2014",
        "year": "2016",
        "model_version": "clf-1",
        "blind": True,
        "sampled": 12,
        "reviewed": 12,
        "created_by": "web",
        "created_at": datetime(2026, 12, 6, tzinfo=UTC),
        "region": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
        "estimate": {
            "mining_ha": interval,
            "proportion": None,
            "users_accuracy": {"estimate": 0.75, "se": None, "low": None, "high": None},
            "producers_accuracy": None,
            "mapped_ha": 10.0,
            "mapped_tiles_ha": 11.0,
            "region_ha": 100.0,
            "tiles": 100,
            **estimate,
        },
    }


def test_an_area_estimate_row_has_every_field_and_its_region() -> None:
    p = exporting.estimate_properties(_report())
    assert list(p) == [name for name, _ in exporting.ESTIMATE_FIELDS]
    assert (p["design_id"], p["kind"], p["year_before"], p["year"]) == (7, "change", "2014", "2016")
    assert (p["mining_ha"], p["mining_ha_se"], p["mining_ha_low"], p["mining_ha_high"]) == (
        12.5,
        4.8734,
        2.9484,
        22.0516,
    )
    # Not estimable yet: empty, not zero.
    assert p["proportion"] is None and p["producers_accuracy_high"] is None
    assert p["users_accuracy"] == 0.75 and p["users_accuracy_low"] is None
    assert p["tiles"] == 100 and p["page"] == "/area/7"
    columns = exporting.estimate_columns([_report()])
    (shape,) = shapely.from_wkb(columns["geometry"])
    assert shape.geom_type == "MultiPolygon" and shape.area == 1.0  # one geometry type a layer
    text = exporting.estimate_csv_text([_report()])
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["mining_ha_low"] == "2.9484" and row["proportion"] == "" and row["blind"] == "true"
    assert shapely.from_wkt(row["WKT"]).area == 1.0
    feature = exporting.estimate_feature(_report())
    assert feature["properties"]["created_at"] == "2026-12-06T00:00:00+00:00"
    assert feature["geometry"]["type"] == "Polygon"
