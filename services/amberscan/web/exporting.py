"""What an export holds, whatever its format: its layers, its fields and their types, and the
shaping of detection rows into GeoJSON features, CSV lines and Arrow batches (for GDAL). Pure:
rows in, documents out.

Two layers of detections: `tiles`, one polygon per scan tile (its verdict under the filters),
and `damaged_areas`, the MultiPolygon of a flagged tile's positive superpixels (the hectares;
the map's vector tiles draw the same, `queries.damaged_area`). Every row of either layer has the
same fields (`FIELDS`). A third layer, `area_estimate`, holds the sample-based area estimate of
each sampling design (issue 28) matching the filters: its region's polygon with the mining area
and its 95 % interval, the map's accuracy and the mapped area beside it (`ESTIMATE_FIELDS`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import shapely
import shapely.geometry as sg

from amberscan.web.core import feature_of

DETECTION_LAYERS = ("tiles", "damaged_areas")
ESTIMATE_LAYER = "area_estimate"
LAYERS = (*DETECTION_LAYERS, ESTIMATE_LAYER)
# The geometry type of each layer, as GDAL names it.
GEOMETRY_TYPES = {
    "tiles": "Polygon",
    "damaged_areas": "MultiPolygon",
    ESTIMATE_LAYER: "MultiPolygon",
}
# format → (GDAL driver or "", file suffix, content type); GeoJSON and CSV are written here.
FORMATS = {
    "geojson": ("", "geojson", "application/geo+json"),
    "csv": ("", "csv", "text/csv"),
    "gpkg": ("GPKG", "gpkg", "application/geopackage+sqlite3"),
    "fgb": ("FlatGeobuf", "fgb", "application/flatgeobuf"),
}
# Formats holding every layer in one file; the others hold one layer each (`layer=`).
MULTI_LAYER = ("gpkg",)

# Every field of a row, in order, with its type ("str", "float", "int", "bool", "time").
FIELDS: tuple[tuple[str, str], ...] = (
    ("tile_id", "str"),
    ("imagery_date", "str"),
    ("year", "str"),
    ("model_version", "str"),
    ("backbone_version", "str"),
    ("threshold", "float"),
    ("threshold_source", "str"),
    ("flagged", "bool"),
    ("max_score", "float"),
    ("positives", "int"),
    ("segment_count", "int"),
    ("min_positives", "int"),
    ("hectares", "float"),
    ("scores", "str"),
    ("review", "str"),
    ("reviewer", "str"),
    ("reviewed_at", "time"),
    ("excluded", "bool"),
    ("exclusion_reason", "str"),
    ("scan_id", "str"),
    ("provider", "str"),
    ("demo", "bool"),
    ("detected_at", "time"),
)
# The CSV's columns: every field, the bounds of the row's geometry, and the geometry as WKT
# (GDAL's CSV reader takes a column named WKT as the geometry).
CSV_FIELDS = (*(name for name, _ in FIELDS), "west", "south", "east", "north", "WKT")


def properties(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one export row (a dict with the columns of `queries.ATTRIBUTES`, plus
    `threshold` and `threshold_source`), typed: times stay `datetime` (None when absent)."""
    p = feature_of({**row, "geojson": "null"})["properties"]
    threshold = row.get("threshold")
    p.update(
        threshold=None if threshold is None else round(float(threshold), 6),
        threshold_source=row.get("threshold_source") or "",
        scores=";".join(f"{s:.4f}" for s in p["scores"]),
        reviewed_at=row["reviewed_at"],
        detected_at=row["detected_at"],
    )
    return {name: p[name] for name, _ in FIELDS}


def feature(row: Mapping[str, Any]) -> dict[str, Any]:
    """A GeoJSON Feature of one export row (its geometry in `geojson`): the map's feature
    (`core.feature_of`, scores as a list) with the threshold."""
    shaped = feature_of(row)
    threshold = row.get("threshold")
    shaped["properties"]["threshold"] = None if threshold is None else round(float(threshold), 6)
    shaped["properties"]["threshold_source"] = row.get("threshold_source") or ""
    return shaped


def csv_text(rows: Iterable[Mapping[str, Any]], header: bool = True) -> str:
    """Export rows as CSV (after the header when `header`): every field, the bounds and the
    geometry (`wkt`) as WKT; times ISO 8601, booleans `true`/`false`. Text cannot start a
    formula."""

    def line(row: Mapping[str, Any]) -> list[Any]:
        p = properties(row)
        bounds = [round(float(row[k]), 7) for k in ("west", "south", "east", "north")]
        return [*(_csv_value(p[name], kind) for name, kind in FIELDS), *bounds, row["wkt"]]

    return _csv_lines(CSV_FIELDS if header else None, map(line, rows))


def _csv_lines(header: Sequence[str] | None, lines: Iterable[Sequence[Any]]) -> str:
    """CSV of `lines`, after `header` when given."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(lines)
    return buffer.getvalue()


def _csv_value(value: Any, kind: str) -> Any:
    if value is None:
        return ""
    if kind == "bool":
        return str(bool(value)).lower()
    if kind == "time":
        return value.isoformat() if isinstance(value, datetime) else str(value)
    if kind == "str":
        return _cell(str(value))
    return value


def _cell(text: str) -> str:
    # A spreadsheet runs a cell starting with = + - @ as a formula: quote it.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def columns(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Export rows as columns: `geometry` (each row's `wkb`) and every field, typed values (None
    where absent); what `gdal_files` hands GDAL as one Arrow batch."""
    out: dict[str, list[Any]] = {"geometry": []} | {name: [] for name, _ in FIELDS}
    for row in rows:
        out["geometry"].append(bytes(row["wkb"]))
        p = properties(row)
        for name, _ in FIELDS:
            out[name].append(p[name])
    return out


def filename(fmt: str, layer: str | None) -> str:
    """The file name of an export: `amberscan-tiles.geojson`, `amberscan.gpkg` (every layer)."""
    suffix = FORMATS[fmt][1]
    return f"amberscan-{layer}.{suffix}" if layer else f"amberscan.{suffix}"


# The fields of the `area_estimate` layer: one row per design, its region as the geometry. The
# intervals are 95 % (estimate ± 1.96 SE); empty where the sample cannot tell yet.
_INTERVALS = (
    ("mining_ha", "mining_ha"),
    ("proportion", "proportion"),
    ("users_accuracy", "users_accuracy"),
    ("producers_accuracy", "producers_accuracy"),
)
ESTIMATE_FIELDS: tuple[tuple[str, str], ...] = (
    ("design_id", "int"),
    ("kind", "str"),
    ("year_before", "str"),
    ("year", "str"),
    ("model_version", "str"),
    ("blind", "bool"),
    ("tiles", "int"),
    ("sampled", "int"),
    ("reviewed", "int"),
    *(
        (f"{name}{part}", "float")
        for name, _ in _INTERVALS
        for part in ("", "_se", "_low", "_high")
    ),
    ("mapped_ha", "float"),
    ("mapped_tiles_ha", "float"),
    ("region_ha", "float"),
    ("created_by", "str"),
    ("created_at", "time"),
    ("page", "str"),
)
ESTIMATE_CSV_FIELDS = (*(name for name, _ in ESTIMATE_FIELDS), "WKT")


def estimate_properties(report: Mapping[str, Any]) -> dict[str, Any]:
    """The `area_estimate` fields of one design's report (`area_queries.report`)."""
    e = report["estimate"]
    p: dict[str, Any] = {
        "design_id": report["id"],
        "kind": report["kind"],
        "year_before": report["year_before"],
        "year": report["year"],
        "model_version": report["model_version"],
        "blind": report["blind"],
        "tiles": e["tiles"],
        "sampled": report["sampled"],
        "reviewed": report["reviewed"],
    }
    for name, key in _INTERVALS:
        interval = e[key] or {}
        for part, field in (("", "estimate"), ("_se", "se"), ("_low", "low"), ("_high", "high")):
            p[f"{name}{part}"] = interval.get(field)
    p.update(
        mapped_ha=e["mapped_ha"],
        mapped_tiles_ha=e["mapped_tiles_ha"],
        region_ha=e["region_ha"],
        created_by=report["created_by"],
        created_at=report["created_at"],
        page=f"/area/{report['id']}",
    )
    return {name: p[name] for name, _ in ESTIMATE_FIELDS}


def estimate_feature(report: Mapping[str, Any]) -> dict[str, Any]:
    """A GeoJSON Feature of one design's estimate: its region and `estimate_properties`."""
    p = estimate_properties(report)
    created = p["created_at"]
    p["created_at"] = created.isoformat() if isinstance(created, datetime) else created
    return {"type": "Feature", "geometry": report["region"], "properties": p}


def estimate_csv_text(reports: Iterable[Mapping[str, Any]], header: bool = True) -> str:
    """Designs' estimates as CSV (after the header when `header`): every field, the region WKT."""

    def line(report: Mapping[str, Any]) -> list[Any]:
        p = estimate_properties(report)
        fields = (_csv_value(p[name], kind) for name, kind in ESTIMATE_FIELDS)
        return [*fields, sg.shape(report["region"]).wkt]

    return _csv_lines(ESTIMATE_CSV_FIELDS if header else None, map(line, reports))


def estimate_columns(reports: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Designs' estimates as columns for GDAL: `geometry` (the region as a MultiPolygon, WKB)
    and every `ESTIMATE_FIELDS` field."""
    out: dict[str, list[Any]] = {"geometry": []} | {name: [] for name, _ in ESTIMATE_FIELDS}
    for report in reports:
        shape = sg.shape(report["region"])
        if isinstance(shape, sg.Polygon):
            shape = sg.MultiPolygon([shape])
        out["geometry"].append(shapely.to_wkb(shape))
        p = estimate_properties(report)
        for name, _ in ESTIMATE_FIELDS:
            out[name].append(p[name])
    return out
