"""The web app's SQL of detections: the map's filters, detection rows with their review state,
the summary. (Reviews, labels and audits: `review_queries`; vector tiles: `vector_tiles`.)

Every statement passes values as parameters; the few dynamic parts (filter clauses) are fixed
strings chosen in code, never text from a request.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from amberscan.common import changes
from amberscan.common.db import Database
from amberscan.web.core import Filters

# A review belongs to the tile and its imagery date, whatever model's detection it was made on:
# under any model the map shows it. A tile a reviewer rejected that a later model flags again is
# `reflagged` (the map shows it so, and the summary counts it).
REVIEW_STATE = """CASE WHEN r.verdict IS NULL THEN 'unreviewed'
     WHEN r.verdict = 'rejected' AND d.flagged AND r.model_version <> d.model_version
     THEN 'reflagged' ELSE r.verdict END"""
# A detection's columns but its geometry's (`geometry_columns` adds those).
ATTRIBUTES = f"""
    d.tile_id, d.imagery_date, d.model_version, d.backbone_version, d.scan_id, d.provider,
    d.flagged, d.positives, d.segment_count, d.min_positives, d.hectares, d.scores, d.demo,
    d.image_key, d.labels_key, d.detected_at,
    r.verdict, r.reviewer, r.reviewed_at, r.model_version AS reviewed_model,
    {REVIEW_STATE} AS review, x.reason AS exclusion_reason
"""


def geometry_columns(geom: str = "d.tile_geom", encoding: str = "geojson") -> str:
    """The columns of a geometry: `geojson` (`ST_AsGeoJSON`, 7 decimals), `wkt` or `wkb`
    (the one named `encoding`), and its bounds `west`, `south`, `east`, `north`."""
    encoded = {
        "geojson": f"ST_AsGeoJSON({geom}, 7) AS geojson",
        "wkt": f"ST_AsText({geom}, 7) AS wkt",
        "wkb": f"ST_AsBinary({geom}) AS wkb",
    }[encoding]
    return (
        f"{encoded}, ST_XMin({geom}) AS west, ST_YMin({geom}) AS south,"
        f" ST_XMax({geom}) AS east, ST_YMax({geom}) AS north"
    )


COLUMNS = f"{ATTRIBUTES}, {geometry_columns()}"


def damaged_area(alias: str = "d.") -> str:
    """The one definition of a detection's damaged area (the positive superpixels' polygons,
    `positives_geom`, of a flagged tile), over the columns of `alias` ("" for unqualified):
    the vector tiles' `damage` layer and the exports' `damaged_areas` layer both use it."""
    return f"{alias}flagged AND {alias}positives_geom IS NOT NULL"


# A detection is excluded when its tile's centre lies in an exclusion area (the first one's
# reason is shown); the GiST indexes of both geometries keep the probe cheap.
EXCLUSION = """
LEFT JOIN LATERAL (SELECT e.reason FROM exclusion_areas e
                   WHERE e.geom && d.tile_geom AND ST_Intersects(e.geom, ST_Centroid(d.tile_geom))
                   ORDER BY e.area_id LIMIT 1) x ON true"""
FROM = f"""
FROM detections d
LEFT JOIN reviews r
  ON r.tile_id = d.tile_id AND r.imagery_date = d.imagery_date{EXCLUSION}
"""


def where_clause(filters: Filters) -> tuple[str, list[Any]]:
    """The WHERE clause (over `d` detections, `r` reviews) of `filters`, with its parameters.

    One verdict per tile: among the detections matching the vintage (year) and model filters,
    the newest imagery date, then the newest run. A replay or rescan with a new model
    supersedes, it does not stack up; a vintage shows each tile as it was in that year.
    """
    clauses: list[str] = ["true"]
    params: list[Any] = []
    newer = ["n.tile_id = d.tile_id"]
    newer_params: list[Any] = []
    if filters.bbox is not None:
        # && uses the GiST index; ST_Intersects then tests the exact geometry.
        clauses.append(
            "d.tile_geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)"
            " AND ST_Intersects(d.tile_geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))"
        )
        params += [*filters.bbox, *filters.bbox]
    if filters.year == "unknown":
        clauses.append("d.imagery_date !~ '^[0-9]{4}'")
        newer.append("n.imagery_date !~ '^[0-9]{4}'")
    elif filters.year:
        clauses.append("left(d.imagery_date, 4) = %s")
        params.append(filters.year)
        newer.append("left(n.imagery_date, 4) = %s")
        newer_params.append(filters.year)
    if filters.model:
        clauses.append("d.model_version = %s")
        params.append(filters.model)
        newer.append("n.model_version = %s")
        newer_params.append(filters.model)
    clauses.append(
        f"NOT EXISTS (SELECT 1 FROM detections n WHERE {' AND '.join(newer)}"
        " AND (n.imagery_date, n.detected_at) > (d.imagery_date, d.detected_at))"
    )
    params += newer_params
    if filters.review:
        clauses.append(f"({REVIEW_STATE}) = %s")
        params.append(filters.review)
    if filters.flagged:
        clauses.append("d.flagged")
    if filters.region:
        # A region is WKT (`params.region` checked it); && first, for the GiST index.
        clauses.append(
            "d.tile_geom && ST_GeomFromText(%s, 4326)"
            " AND ST_Intersects(d.tile_geom, ST_GeomFromText(%s, 4326))"
        )
        params += [filters.region, filters.region]
    if filters.change:
        previous = changes.previous_flagged("d", bool(filters.model))
        clauses.append(changes.change_clause(filters.change, "d", previous))
        params += [filters.year] + ([filters.model] if filters.model else [])
    return " AND ".join(clauses), params


async def fetch_dicts(db: Database, query: str, params: list[Any]) -> list[dict[str, Any]]:
    async with db.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query.encode(), params)
        return await cursor.fetchall()


async def detections(db: Database, filters: Filters, *, page: bool = True) -> list[dict[str, Any]]:
    """Detection rows matching `filters`, in a stable order; each has `matched` (total count)."""
    where, params = where_clause(filters)
    query = f"SELECT {COLUMNS}, count(*) OVER () AS matched {FROM} WHERE {where} ORDER BY d.tile_id, d.imagery_date, d.model_version"
    if page:
        query += " LIMIT %s OFFSET %s"
        params += [filters.limit, filters.offset]
    return await fetch_dicts(db, query, params)


async def count_detections(db: Database, filters: Filters) -> int:
    where, params = where_clause(filters)
    rows = await fetch_dicts(db, f"SELECT count(*) AS n {FROM} WHERE {where}", params)
    return int(rows[0]["n"])


async def detection(
    db: Database, tile_id: str, imagery_date: str | None, model: str | None
) -> dict[str, Any] | None:
    """One detection of a tile: the given date/model, else the newest row."""
    clauses, params = ["d.tile_id = %s"], [tile_id]
    if imagery_date is not None:
        clauses.append("d.imagery_date = %s")
        params.append(imagery_date)
    if model:
        clauses.append("d.model_version = %s")
        params.append(model)
    rows = await fetch_dicts(
        db,
        f"SELECT {COLUMNS} {FROM} WHERE {' AND '.join(clauses)} ORDER BY d.detected_at DESC, d.imagery_date DESC LIMIT 1",
        params,
    )
    return rows[0] if rows else None


async def summary(
    db: Database, filters: Filters, cells: tuple[str, list[Any]] | None
) -> dict[str, Any]:
    """Counts for the summary panel: tiles, flagged, hectares, reviews, extent, and per vintage
    the tiles, flagged, hectares and the new damage against each tile's previous vintage.

    Totals come from `map_cells` (the `cells` condition, see `vector_tiles.cell_scope`; a bbox
    counts the zoom-15 cells that meet it) when given, else from the detections; review counts
    always from the reviews themselves, so a review shows at once.
    """
    where, params = where_clause(filters)
    if cells is None:
        source, sparams = (
            f"(SELECT d.*, {REVIEW_STATE} AS review, x.reason IS NOT NULL AS excluded {FROM} WHERE {where}) c",
            params,
        )
        totals_q = """count(*) AS tiles,
            count(*) FILTER (WHERE c.flagged AND NOT c.excluded) AS flagged,
            coalesce(sum(c.hectares) FILTER (WHERE c.flagged AND NOT c.excluded), 0) AS hectares,
            count(*) FILTER (WHERE c.flagged AND c.excluded) AS excluded,
            coalesce(sum(c.hectares) FILTER (WHERE c.flagged AND c.excluded), 0)
                AS excluded_hectares,
            count(*) FILTER (WHERE c.demo) AS demo,
            count(*) FILTER (WHERE c.provider = 'synthetic') AS synthetic,
            min(ST_XMin(c.tile_geom)) AS west, min(ST_YMin(c.tile_geom)) AS south,
            max(ST_XMax(c.tile_geom)) AS east, max(ST_YMax(c.tile_geom)) AS north"""
    else:
        scope, sparams = cells
        level = 15 if filters.bbox else 11
        box = ""
        if filters.bbox:
            box = " AND east > %s AND north > %s AND west < %s AND south < %s"
            sparams = [*sparams, *filters.bbox]
        source = f"(SELECT * FROM map_cells WHERE level = {level} AND {scope}{box}) c"
        totals_q = """coalesce(sum(c.tiles), 0) AS tiles, coalesce(sum(c.flagged), 0) AS flagged,
            coalesce(sum(c.hectares), 0) AS hectares, coalesce(sum(c.excluded), 0) AS excluded,
            coalesce(sum(c.excluded_hectares), 0) AS excluded_hectares,
            coalesce(sum(c.demo), 0) AS demo,
            coalesce(sum(c.synthetic), 0) AS synthetic, min(c.west) AS west,
            min(c.south) AS south, max(c.east) AS east, max(c.north) AS north"""
    totals = (await fetch_dicts(db, f"SELECT {totals_q} FROM {source}", sparams))[0]
    reviews = (
        await fetch_dicts(
            db,
            f"""SELECT count(*) FILTER (WHERE r.verdict = 'confirmed') AS confirmed,
                       count(*) FILTER (WHERE r.verdict = 'rejected') AS rejected,
                       count(*) FILTER (WHERE r.verdict = 'rejected' AND d.flagged
                                        AND r.model_version <> d.model_version) AS reflagged,
                       count(*) FILTER (WHERE d.flagged AND x.reason IS NULL) AS reviewed_flagged,
                       coalesce(sum(d.hectares) FILTER (WHERE r.verdict = 'confirmed'), 0)
                           AS confirmed_hectares
                FROM reviews r JOIN detections d USING (tile_id, imagery_date)
                {EXCLUSION} WHERE {where}""",
            params,
        )
    )[0]
    vintages = await _by_vintage(db, filters, cells)
    extent = None
    if totals["west"] is not None:
        extent = [float(totals[k]) for k in ("west", "south", "east", "north")]
    return {
        "tiles": int(totals["tiles"]),
        "flagged": int(totals["flagged"]),
        "hectares": round(float(totals["hectares"]), 4),
        "excluded": {
            "flagged": int(totals["excluded"]),
            "hectares": round(float(totals["excluded_hectares"]), 4),
        },
        "demo": int(totals["demo"]),
        "synthetic": int(totals["synthetic"]),
        "reviews": {
            "confirmed": int(reviews["confirmed"]),
            "rejected": int(reviews["rejected"]),
            "reflagged": int(reviews["reflagged"]),
            "unreviewed_flagged": max(0, int(totals["flagged"]) - int(reviews["reviewed_flagged"])),
            "confirmed_hectares": round(float(reviews["confirmed_hectares"]), 4),
        },
        "by_year": vintages,
        "extent": extent,
        "years": sorted(vintages),
        "models": await _models(db, cells is not None),
    }


async def _by_vintage(
    db: Database, filters: Filters, cells: tuple[str, list[Any]] | None
) -> dict[str, dict[str, Any]]:
    """Per imagery year (every vintage, whatever year is chosen): each tile's verdict in that
    vintage, and the new damage (flagged, not flagged in the tile's previous vintage)."""
    if cells is not None:
        scope = "latest_year_model AND model_version = %s" if filters.model else "latest_year"
        params: list[Any] = [filters.model] if filters.model else []
        query = f"""SELECT year, sum(tiles) AS tiles, sum(flagged) AS flagged,
                           sum(hectares) AS hectares,
                           coalesce(sum(tiles) FILTER (WHERE change = 'new'), 0) AS new_tiles,
                           coalesce(sum(hectares) FILTER (WHERE change = 'new'), 0) AS new_hectares,
                           coalesce(sum(tiles) FILTER (WHERE change = 'gone'), 0) AS gone_tiles
                    FROM map_cells WHERE level = 11 AND {scope} GROUP BY year ORDER BY year"""
        rows = await fetch_dicts(db, query, params)
        if filters.model:  # the change of one model's vintages is not aggregated
            for row in rows:
                row["new_tiles"] = row["new_hectares"] = row["gone_tiles"] = None
    else:
        year = (
            "CASE WHEN d.imagery_date ~ '^[0-9]{4}' THEN left(d.imagery_date, 4) ELSE 'unknown' END"
        )
        where, params = where_clause(Filters(bbox=filters.bbox, model=filters.model))
        rows = await fetch_dicts(
            db,
            f"""SELECT {year} AS year, count(*) AS tiles,
                       count(*) FILTER (WHERE d.flagged AND x.reason IS NULL) AS flagged,
                       coalesce(sum(d.hectares) FILTER (WHERE d.flagged AND x.reason IS NULL), 0)
                           AS hectares,
                       NULL AS new_tiles, NULL AS new_hectares, NULL AS gone_tiles
                {FROM} WHERE {where} GROUP BY 1 ORDER BY 1""",
            params,
        )
    return {
        r["year"]: {
            "tiles": int(r["tiles"]),
            "flagged": int(r["flagged"]),
            "hectares": round(float(r["hectares"]), 4),
            "new_tiles": None if r["new_tiles"] is None else int(r["new_tiles"]),
            "new_hectares": None
            if r["new_hectares"] is None
            else round(float(r["new_hectares"]), 4),
            "gone_tiles": None if r["gone_tiles"] is None else int(r["gone_tiles"]),
        }
        for r in rows
    }


async def _models(db: Database, cells: bool) -> list[str]:
    table = "map_cells WHERE level = 11" if cells else "detections"
    rows = await fetch_dicts(db, f"SELECT DISTINCT model_version FROM {table} ORDER BY 1", [])
    return [r["model_version"] for r in rows]
