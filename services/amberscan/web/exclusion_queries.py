"""The web app's SQL of exclusion areas: known legal quarries, sand pits, construction sites.

A detection whose tile's centre lies in an area is excluded (`queries.EXCLUSION`): kept, shown
as excluded, left out of the flagged hectares. Areas are user-supplied GeoJSON polygons, each
with a reason (and optionally a name and a region), stored in PostGIS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from amberscan.common.db import Database
from amberscan.web.core import BadRequest, Filters
from amberscan.web.queries import EXCLUSION, fetch_dicts, where_clause


@dataclass(frozen=True)
class Area:
    """One exclusion polygon as given: its GeoJSON geometry text and its properties."""

    geometry: str
    reason: str
    name: str = ""
    region: str = ""


async def _check(db: Database, area: Area) -> None:
    rows = await fetch_dicts(
        db,
        """SELECT ST_IsValid(g) AS valid, ST_IsValidReason(g) AS why,
                  ST_XMin(g) >= -180 AND ST_XMax(g) <= 180 AND ST_YMin(g) >= -90
                  AND ST_YMax(g) <= 90 AS in_range
           FROM (SELECT ST_GeomFromGeoJSON(%s) AS g) s""",
        [area.geometry],
    )
    if not rows[0]["valid"]:
        raise BadRequest(f"exclusion area {area.name or area.reason!r}: {rows[0]['why']}")
    if not rows[0]["in_range"]:
        raise BadRequest(f"exclusion area {area.name or area.reason!r}: not WGS84 degrees")


_INSERT = """INSERT INTO exclusion_areas (region, reason, name, geom, created_by)
VALUES (%s, %s, %s, ST_Multi(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)), %s) RETURNING area_id"""


async def add(db: Database, areas: list[Area], created_by: str) -> list[int]:
    """Store `areas` (each checked first: a valid polygon in degrees); their new ids."""
    for area in areas:
        await _check(db, area)
    ids = []
    async with db.pool.connection() as conn, conn.transaction():
        for a in areas:
            cursor = await conn.execute(
                _INSERT.encode(), [a.region, a.reason, a.name, a.geometry, created_by]
            )
            ids.append(int((await cursor.fetchone())[0]))  # type: ignore[index]
    return ids


async def replace(db: Database, area_id: int, area: Area, by: str) -> bool:
    """Give area `area_id` a new polygon and properties; False when there is no such area."""
    await _check(db, area)
    rows = await fetch_dicts(
        db,
        """UPDATE exclusion_areas SET region = %s, reason = %s, name = %s,
               geom = ST_Multi(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)), created_by = %s,
               created_at = now()
           WHERE area_id = %s RETURNING area_id""",
        [area.region, area.reason, area.name, area.geometry, by, area_id],
    )
    return bool(rows)


async def delete(db: Database, area_id: int) -> bool:
    rows = await fetch_dicts(
        db, "DELETE FROM exclusion_areas WHERE area_id = %s RETURNING area_id", [area_id]
    )
    return bool(rows)


async def areas(db: Database, filters: Filters) -> list[dict[str, Any]]:
    """Every area as a GeoJSON Feature, with the detections (under `filters`) inside it."""
    where, params = where_clause(filters)
    rows = await fetch_dicts(
        db,
        f"""SELECT e.area_id, e.region, e.reason, e.name, e.created_by, e.created_at,
                   ST_AsGeoJSON(e.geom, 7) AS geojson, c.*
            FROM exclusion_areas e
            LEFT JOIN LATERAL (
                SELECT count(*) AS tiles, count(*) FILTER (WHERE d.flagged) AS flagged,
                       coalesce(sum(d.hectares) FILTER (WHERE d.flagged), 0) AS hectares
                FROM detections d
                LEFT JOIN reviews r ON r.tile_id = d.tile_id
                    AND r.imagery_date = d.imagery_date
                WHERE d.tile_geom && e.geom AND ST_Intersects(e.geom, ST_Centroid(d.tile_geom))
                  AND {where}) c ON true
            ORDER BY e.area_id""",
        params,
    )
    return [
        {
            "type": "Feature",
            "id": r["area_id"],
            "geometry": json.loads(r["geojson"]),
            "properties": {
                "area_id": r["area_id"],
                "reason": r["reason"],
                "name": r["name"],
                "region": r["region"],
                "created_by": r["created_by"],
                "created_at": r["created_at"].isoformat(),
                "tiles": int(r["tiles"]),
                "flagged": int(r["flagged"]),
                "hectares": round(float(r["hectares"]), 4),
            },
        }
        for r in rows
    ]


async def by_reason(db: Database, filters: Filters) -> list[dict[str, Any]]:
    """Per reason: its areas, and the excluded detections (under `filters`) — each detection
    counted once, under the first area (by id) its tile's centre lies in."""
    where, params = where_clause(filters)
    rows = await fetch_dicts(
        db,
        f"""WITH inside AS (
                SELECT DISTINCT d.tile_id, d.imagery_date, d.model_version
                FROM exclusion_areas e
                JOIN detections d ON d.tile_geom && e.geom
                                 AND ST_Intersects(e.geom, ST_Centroid(d.tile_geom))),
            counted AS (
                SELECT x.reason, count(*) AS tiles, count(*) FILTER (WHERE d.flagged) AS flagged,
                       coalesce(sum(d.hectares) FILTER (WHERE d.flagged), 0) AS hectares
                FROM inside i
                JOIN detections d USING (tile_id, imagery_date, model_version)
                LEFT JOIN reviews r ON r.tile_id = d.tile_id
                    AND r.imagery_date = d.imagery_date
                {EXCLUSION}
                WHERE {where} GROUP BY x.reason)
            SELECT a.reason, a.areas, coalesce(c.tiles, 0) AS tiles,
                   coalesce(c.flagged, 0) AS flagged, coalesce(c.hectares, 0) AS hectares
            FROM (SELECT reason, count(*) AS areas FROM exclusion_areas GROUP BY reason) a
            LEFT JOIN counted c USING (reason) ORDER BY a.reason""",
        params,
    )
    return [
        {
            "reason": r["reason"],
            "areas": int(r["areas"]),
            "tiles": int(r["tiles"]),
            "flagged": int(r["flagged"]),
            "hectares": round(float(r["hectares"]), 4),
        }
        for r in rows
    ]
