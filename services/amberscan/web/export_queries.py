"""The rows of an export: one layer's detections matching the filters, from a server-side cursor
(memory holds what the cursor fetched, however many match), each with its classifier's score
threshold.

Each tile appears once, with its verdict under the filters (`queries.where_clause`); the
`damaged_areas` layer keeps the tiles with a damaged area (`queries.damaged_area`) and takes
that MultiPolygon as the geometry.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from psycopg.rows import dict_row

from amberscan.common.db import Database
from amberscan.web import core, queries
from amberscan.web.core import Filters
from amberscan.web.exporting import DETECTION_LAYERS


class ThresholdSource(Protocol):
    """What gives a detection's threshold (`state.Thresholds`)."""

    async def of(self, row: dict[str, Any]) -> tuple[float, str]: ...


async def row_threshold(
    row: dict[str, Any], thresholds: ThresholdSource, missing: set[str]
) -> tuple[float, str]:
    """(threshold, source) of a detection row: its version's from the registry, else implied by
    the row's scores (`core.implied_threshold`). `missing` holds the versions the registry
    lacked, so that one request (an export, a queue) asks for each of them once, not per row."""
    if row["model_version"] not in missing:
        threshold, source = await thresholds.of(row)
        if source == "registry":
            return threshold, source
        missing.add(row["model_version"])
    return core.implied_threshold(row["scores"] or [], int(row["positives"])), "implied"


def export_sql(filters: Filters, layer: str, encoding: str) -> tuple[str, list[Any]]:
    """The query of one layer's rows, their geometry as `encoding` (geojson, wkt, wkb)."""
    if layer not in DETECTION_LAYERS:
        raise ValueError(f"layer {layer!r}: one of {', '.join(DETECTION_LAYERS)}")
    where, params = queries.where_clause(filters)
    geom = "d.tile_geom"
    if layer == "damaged_areas":
        where = f"{where} AND {queries.damaged_area()}"
        geom = "d.positives_geom"
    query = (
        f"SELECT {queries.ATTRIBUTES}, {queries.geometry_columns(geom, encoding)}"
        f" {queries.FROM} WHERE {where} ORDER BY d.tile_id, d.imagery_date, d.model_version"
    )
    return query, params


async def export_rows(
    db: Database,
    filters: Filters,
    layer: str,
    encoding: str,
    thresholds: ThresholdSource,
) -> AsyncGenerator[dict[str, Any], None]:
    """Every row of `layer` matching `filters`, with `threshold` and `threshold_source`
    (the registry's, else implied by the row's scores: `core.implied_threshold`)."""
    query, params = export_sql(filters, layer, encoding)
    missing: set[str] = set()
    async with db.pool.connection() as conn, conn.transaction():
        async with conn.cursor(name="amberscan_export", row_factory=dict_row) as cursor:
            await cursor.execute(query.encode(), params)
            async for row in cursor:
                row["threshold"], row["threshold_source"] = await row_threshold(
                    row, thresholds, missing
                )
                yield row


async def count_rows(db: Database, filters: Filters, layer: str) -> int:
    """How many rows `layer` has under `filters` (what a complete export of it holds)."""
    query, params = export_sql(filters, layer, "wkb")
    rows = await queries.fetch_dicts(db, f"SELECT count(*) AS n FROM ({query}) e", params)
    return int(rows[0]["n"])
