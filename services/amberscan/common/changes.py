"""Change between vintages or between models: which tiles' verdict changed, and by how much.

A *vintage* is an imagery year. A tile's verdict in a vintage is its newest detection with imagery
of that year (newest imagery date, then newest run), among one model's detections when a model
is named. Two comparisons:

* vintages (`amberscan diff --from 2015 --to 2016`, `/api/changes.geojson?from=2015&to=2016`):
  tiles with a verdict in both years whose flag differs;
* models (`amberscan diff --model A --model B`, `?model=A&model=B`): tiles whose newest imagery
  date scored by both models got different flags.

`new` is damage that appeared (flagged after, not before), `gone` a flag that disappeared. The
map's change view compares each tile's vintage with its previous one (`previous_flagged`); the
summary's new damage per year and the map's low-zoom aggregates count the same (in `map_cells`).

The SQL here is shared by the web app and the CLI; the formatters below it are pure.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

KINDS = ("new", "gone")
CHANGE_FILTERS = ("new", "gone", "changed")
_YEAR = re.compile(r"^\d{4}$")
_MODEL = re.compile(r"^[A-Za-z0-9._:+-]{1,128}$")


class BadComparison(ValueError):
    """A comparison that cannot be made; the message says what to give instead."""


@dataclass(frozen=True)
class Comparison:
    """What to compare: two vintages (`before`, `after` years, optionally within `model`), or
    two models (`before_model`, `after_model`, optionally within the vintage `year`)."""

    before: str = ""
    after: str = ""
    model: str = ""
    before_model: str = ""
    after_model: str = ""
    year: str = ""

    @property
    def by_model(self) -> bool:
        return bool(self.before_model)

    def describe(self) -> str:
        if self.by_model:
            where = f" on {self.year} imagery" if self.year else ""
            return f"model {self.before_model} → {self.after_model}{where}"
        within = f" (model {self.model})" if self.model else ""
        return f"vintage {self.before} → {self.after}{within}"


def comparison(years: tuple[str, str] | None, models: Iterable[str], year: str = "") -> Comparison:
    """A checked comparison from (`from`, `to`) years or two model versions.

    Raises:
        BadComparison: neither or both kinds, malformed years or models, equal sides.
    """
    models = [m for m in models if m]
    for m in models:
        if not _MODEL.match(m):
            raise BadComparison(f"model {m[:40]!r}: not a model version")
    if year and not _YEAR.match(year):
        raise BadComparison(f"year {year[:20]!r}: four digits")
    if years is not None:
        before, after = years
        for y in (before, after):
            if not _YEAR.match(y):
                raise BadComparison(f"vintage {y[:20]!r}: a four-digit imagery year")
        if before == after:
            raise BadComparison(f"from and to are both {before}: compare two vintages")
        if len(models) > 1:
            raise BadComparison("give two vintages (from, to) or two models, not both")
        return Comparison(before=before, after=after, model=models[0] if models else "")
    if len(models) != 2:
        raise BadComparison(
            "give two vintages (--from YEAR --to YEAR) or two models (--model A --model B)"
        )
    if models[0] == models[1]:
        raise BadComparison(f"both models are {models[0]}: compare two models")
    return Comparison(before_model=models[0], after_model=models[1], year=year)


def classify(before: bool | None, after: bool) -> str:
    """`new` (flagged now, not before), `gone`, `same`, or `first` (no verdict before)."""
    if before is None:
        return "first"
    if after and not before:
        return "new"
    if before and not after:
        return "gone"
    return "same"


# ---------------------------------------------------------------- SQL

_SIDE = """SELECT DISTINCT ON (tile_id) tile_id, imagery_date, model_version, flagged, positives,
       hectares
FROM detections WHERE {where}
ORDER BY tile_id, imagery_date DESC, detected_at DESC"""


def _side(year: str, model: str) -> tuple[str, list[Any]]:
    clauses, params = ["imagery_date ~ '^[0-9]{4}'"], []
    if year:
        clauses.append("left(imagery_date, 4) = %s")
        params.append(year)
    if model:
        clauses.append("model_version = %s")
        params.append(model)
    return _SIDE.format(where=" AND ".join(clauses)), params


def diff_query(spec: Comparison) -> tuple[str, list[Any]]:
    """SQL and parameters listing the tiles whose verdict differs between the two sides."""
    if spec.by_model:
        # The model sides are paired on the same imagery: the newest date both models scored.
        year = " AND left(a.imagery_date, 4) = %s" if spec.year else ""
        query = f"""
SELECT DISTINCT ON (a.tile_id) a.tile_id, a.imagery_date AS before_date,
       a.model_version AS before_model, a.flagged AS before_flagged,
       a.positives AS before_positives, a.hectares AS before_hectares,
       b.imagery_date AS after_date, b.model_version AS after_model,
       b.flagged AS after_flagged, b.positives AS after_positives,
       b.hectares AS after_hectares, ST_AsGeoJSON(b.tile_geom, 7) AS geojson
FROM detections a
JOIN detections b ON b.tile_id = a.tile_id AND b.imagery_date = a.imagery_date
                 AND b.model_version = %s
WHERE a.model_version = %s{year}
ORDER BY a.tile_id, a.imagery_date DESC"""
        params: list[Any] = [spec.after_model, spec.before_model]
        if spec.year:
            params.append(spec.year)
        return f"SELECT * FROM ({query}) pairs WHERE before_flagged <> after_flagged", params
    before, p1 = _side(spec.before, spec.model)
    after, p2 = _side(spec.after, spec.model)
    query = f"""
WITH a AS ({before}), b AS ({after})
SELECT b.tile_id, a.imagery_date AS before_date, a.model_version AS before_model,
       a.flagged AS before_flagged, a.positives AS before_positives,
       a.hectares AS before_hectares, b.imagery_date AS after_date,
       b.model_version AS after_model, b.flagged AS after_flagged,
       b.positives AS after_positives, b.hectares AS after_hectares,
       ST_AsGeoJSON(d.tile_geom, 7) AS geojson
FROM a JOIN b USING (tile_id)
JOIN detections d ON d.tile_id = b.tile_id AND d.imagery_date = b.imagery_date
                 AND d.model_version = b.model_version
WHERE a.flagged <> b.flagged ORDER BY b.tile_id"""
    return query, p1 + p2


async def diff(db: Any, spec: Comparison) -> AsyncIterator[dict[str, Any]]:
    """The changed tiles of `spec`, streamed from a server-side cursor, in tile order."""
    query, params = diff_query(spec)
    async with db.pool.connection() as conn, conn.transaction():
        cursor = conn.cursor(name="amberscan_diff", row_factory=dict_row)
        async with cursor:
            await cursor.execute(query.encode(), params)
            async for row in cursor:
                yield change_row(row)


def previous_flagged(alias: str, model_param: bool) -> str:
    """SQL of the flag of the tile of detection `alias` in its previous vintage (the newest
    detection with imagery of an earlier year; of the same model when `model_param`, which then
    takes a parameter after the year's). NULL when the tile has no earlier vintage."""
    model = " AND p.model_version = %s" if model_param else ""
    return (
        f"(SELECT p.flagged FROM detections p WHERE p.tile_id = {alias}.tile_id"
        " AND p.imagery_date < %s AND p.imagery_date ~ '^[0-9]{4}'"
        f"{model} ORDER BY p.imagery_date DESC, p.detected_at DESC LIMIT 1)"
    )


def change_clause(change: str, alias: str, previous: str) -> str:
    """The SQL condition that detection `alias` is a `change` (new, gone, changed) against the
    `previous` verdict's SQL (named once, so its parameters are needed once)."""
    if change == "new":
        return f"({alias}.flagged AND {previous} = false)"
    if change == "gone":
        return f"(NOT {alias}.flagged AND {previous} = true)"
    return f"({previous} <> {alias}.flagged)"


# ---------------------------------------------------------------- pure formatting


def change_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One changed tile as plain values: its kind, hectares gained or lost, both sides."""
    kind = classify(bool(row["before_flagged"]), bool(row["after_flagged"]))
    hectares = row["after_hectares"] if kind == "new" else row["before_hectares"]
    return {
        "tile_id": row["tile_id"],
        "change": kind,
        "hectares": round(float(hectares), 4),
        "before_date": row["before_date"],
        "before_model": row["before_model"],
        "before_flagged": bool(row["before_flagged"]),
        "before_positives": int(row["before_positives"]),
        "after_date": row["after_date"],
        "after_model": row["after_model"],
        "after_flagged": bool(row["after_flagged"]),
        "after_positives": int(row["after_positives"]),
        "geometry": json.loads(row["geojson"]),
    }


CSV_FIELDS = (
    "tile_id",
    "change",
    "hectares",
    "before_date",
    "before_model",
    "before_flagged",
    "before_positives",
    "after_date",
    "after_model",
    "after_flagged",
    "after_positives",
)


def csv_lines(changes: Iterable[Mapping[str, Any]], header: bool = True) -> str:
    """CSV text of changed tiles (the header first when `header`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(CSV_FIELDS)
    for c in changes:
        writer.writerow([str(c[f]).lower() if isinstance(c[f], bool) else c[f] for f in CSV_FIELDS])
    return buffer.getvalue()


def feature(change: Mapping[str, Any]) -> dict[str, Any]:
    """A GeoJSON Feature of a changed tile (its geometry, every other field a property)."""
    properties = {k: v for k, v in change.items() if k != "geometry"}
    return {
        "type": "Feature",
        "id": change["tile_id"],
        "geometry": change["geometry"],
        "properties": properties,
    }


def table(changes: Iterable[Mapping[str, Any]]) -> str:
    """A fixed-width text table of changed tiles, with the totals per kind."""
    lines = [f"{'tile':<18} {'change':<6} {'ha':>8}  before → after"]
    totals = {k: [0, 0.0] for k in KINDS}
    for c in changes:
        totals[c["change"]][0] += 1
        totals[c["change"]][1] += c["hectares"]
        lines.append(
            f"{c['tile_id']:<18} {c['change']:<6} {c['hectares']:>8.2f}  "
            f"{c['before_date']} {c['before_model']} {'F' if c['before_flagged'] else '-'} → "
            f"{c['after_date']} {c['after_model']} {'F' if c['after_flagged'] else '-'}"
        )
    for kind, (n, ha) in totals.items():
        lines.append(f"{kind}: {n} tiles, {ha:.2f} ha")
    return "\n".join(lines) + "\n"
