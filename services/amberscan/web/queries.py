"""The web app's SQL: detections with their review state, summaries, reviews, labels, audits.

Every statement passes values as parameters; the few dynamic parts (filter clauses) are fixed
strings chosen in code, never text from a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from amberscan.common.db import Database
from amberscan.web.core import Filters

COLUMNS = """
    d.tile_id, d.imagery_date, d.model_version, d.backbone_version, d.scan_id, d.provider,
    d.flagged, d.positives, d.segment_count, d.min_positives, d.hectares, d.scores, d.demo,
    d.image_key, d.labels_key, d.detected_at, ST_AsGeoJSON(d.tile_geom, 7) AS geojson,
    ST_XMin(d.tile_geom) AS west, ST_YMin(d.tile_geom) AS south,
    ST_XMax(d.tile_geom) AS east, ST_YMax(d.tile_geom) AS north,
    r.verdict, r.reviewer, r.reviewed_at
"""
FROM = """
FROM detections d
LEFT JOIN reviews r
  ON r.tile_id = d.tile_id AND r.imagery_date = d.imagery_date
 AND r.model_version = d.model_version
"""


def _where(filters: Filters) -> tuple[str, list[Any]]:
    clauses: list[str] = ["true"]
    params: list[Any] = []
    if filters.bbox is not None:
        # && uses the GiST index; ST_Intersects then tests the exact geometry.
        clauses.append(
            "d.tile_geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)"
            " AND ST_Intersects(d.tile_geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))"
        )
        params += [*filters.bbox, *filters.bbox]
    if filters.year == "unknown":
        clauses.append("d.imagery_date !~ '^[0-9]{4}'")
    elif filters.year:
        clauses.append("left(d.imagery_date, 4) = %s")
        params.append(filters.year)
    if filters.model:
        clauses.append("d.model_version = %s")
        params.append(filters.model)
    else:
        # Without a model filter each tile shows its latest verdict (newest imagery, then the
        # newest run): a replay or rescan with a new model supersedes, it does not stack up.
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM detections n WHERE n.tile_id = d.tile_id"
            " AND (n.imagery_date, n.detected_at) > (d.imagery_date, d.detected_at))"
        )
    return " AND ".join(clauses), params


async def _rows(db: Database, query: str, params: list[Any]) -> list[dict[str, Any]]:
    async with db.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query.encode(), params)
        return await cursor.fetchall()


async def detections(db: Database, filters: Filters, *, page: bool = True) -> list[dict[str, Any]]:
    """Detection rows matching `filters`, in a stable order; each has `matched` (total count)."""
    where, params = _where(filters)
    query = f"SELECT {COLUMNS}, count(*) OVER () AS matched {FROM} WHERE {where} ORDER BY d.tile_id, d.imagery_date, d.model_version"
    if page:
        query += " LIMIT %s OFFSET %s"
        params += [filters.limit, filters.offset]
    return await _rows(db, query, params)


async def count_detections(db: Database, filters: Filters) -> int:
    where, params = _where(filters)
    rows = await _rows(db, f"SELECT count(*) AS n {FROM} WHERE {where}", params)
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
    rows = await _rows(
        db,
        f"SELECT {COLUMNS} {FROM} WHERE {' AND '.join(clauses)} ORDER BY d.detected_at DESC, d.imagery_date DESC LIMIT 1",
        params,
    )
    return rows[0] if rows else None


async def summary(db: Database, filters: Filters) -> dict[str, Any]:
    """Counts for the summary panel: tiles, flagged, hectares, by year, reviews, extent."""
    where, params = _where(filters)
    year = "CASE WHEN d.imagery_date ~ '^[0-9]{4}' THEN left(d.imagery_date, 4) ELSE 'unknown' END"
    totals = (
        await _rows(
            db,
            f"""SELECT count(*) AS tiles,
                       count(*) FILTER (WHERE d.flagged) AS flagged,
                       coalesce(sum(d.hectares) FILTER (WHERE d.flagged), 0) AS hectares,
                       count(*) FILTER (WHERE d.demo) AS demo,
                       count(*) FILTER (WHERE r.verdict = 'confirmed') AS confirmed,
                       count(*) FILTER (WHERE r.verdict = 'rejected') AS rejected,
                       count(*) FILTER (WHERE d.flagged AND r.verdict IS NULL) AS unreviewed_flagged,
                       coalesce(sum(d.hectares) FILTER (WHERE r.verdict = 'confirmed'), 0)
                           AS confirmed_hectares,
                       ST_XMin(ST_Extent(d.tile_geom)) AS west, ST_YMin(ST_Extent(d.tile_geom)) AS south,
                       ST_XMax(ST_Extent(d.tile_geom)) AS east, ST_YMax(ST_Extent(d.tile_geom)) AS north
                {FROM} WHERE {where}""",
            params,
        )
    )[0]
    by_year = await _rows(
        db,
        f"""SELECT {year} AS year, count(*) AS tiles,
                   count(*) FILTER (WHERE d.flagged) AS flagged,
                   coalesce(sum(d.hectares) FILTER (WHERE d.flagged), 0) AS hectares
            {FROM} WHERE {where} GROUP BY 1 ORDER BY 1""",
        params,
    )
    models = await _rows(
        db, "SELECT DISTINCT model_version FROM detections ORDER BY model_version", []
    )
    years = await _rows(
        db,
        f"SELECT DISTINCT {year} AS year FROM detections d ORDER BY 1",
        [],
    )
    extent = None
    if totals["west"] is not None:
        extent = [float(totals[k]) for k in ("west", "south", "east", "north")]
    return {
        "tiles": int(totals["tiles"]),
        "flagged": int(totals["flagged"]),
        "hectares": round(float(totals["hectares"]), 4),
        "demo": int(totals["demo"]),
        "reviews": {
            "confirmed": int(totals["confirmed"]),
            "rejected": int(totals["rejected"]),
            "unreviewed_flagged": int(totals["unreviewed_flagged"]),
            "confirmed_hectares": round(float(totals["confirmed_hectares"]), 4),
        },
        "by_year": {
            r["year"]: {
                "tiles": int(r["tiles"]),
                "flagged": int(r["flagged"]),
                "hectares": round(float(r["hectares"]), 4),
            }
            for r in by_year
        },
        "extent": extent,
        "years": [r["year"] for r in years],
        "models": [r["model_version"] for r in models],
    }


async def save_review(
    db: Database,
    tile_id: str,
    imagery_date: str,
    model: str,
    verdict: str,
    reviewer: str,
    note: str,
) -> dict[str, Any]:
    rows = await _rows(
        db,
        """INSERT INTO reviews (tile_id, imagery_date, model_version, verdict, reviewer, note, reviewed_at)
           VALUES (%s, %s, %s, %s, %s, %s, now())
           ON CONFLICT (tile_id, imagery_date, model_version) DO UPDATE SET
               verdict = EXCLUDED.verdict, reviewer = EXCLUDED.reviewer, note = EXCLUDED.note,
               reviewed_at = EXCLUDED.reviewed_at
           RETURNING verdict, reviewer, reviewed_at""",
        [tile_id, imagery_date, model, verdict, reviewer, note],
    )
    return rows[0]


async def delete_review(db: Database, tile_id: str, imagery_date: str, model: str) -> None:
    await db.execute(
        "DELETE FROM reviews WHERE tile_id = %s AND imagery_date = %s AND model_version = %s",
        tile_id,
        imagery_date,
        model,
    )


async def save_label(
    db: Database, row: dict[str, Any], segment: int, label: int | None, reviewer: str
) -> None:
    """Set (or with None, remove) a person's label of superpixel `segment` of a detection's tile."""
    if label is None:
        await db.execute(
            "DELETE FROM superpixel_labels WHERE labels_key = %s AND segment_index = %s",
            row["labels_key"],
            segment,
        )
        return
    await db.execute(
        """INSERT INTO superpixel_labels
               (labels_key, segment_index, image_key, tile_id, imagery_date, label, reviewer, labelled_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, now())
           ON CONFLICT (labels_key, segment_index) DO UPDATE SET
               label = EXCLUDED.label, reviewer = EXCLUDED.reviewer, labelled_at = now()""",
        row["labels_key"],
        segment,
        row["image_key"],
        row["tile_id"],
        row["imagery_date"],
        label,
        reviewer,
    )


async def labels_of(db: Database, labels_key: str) -> dict[int, int]:
    """Segment index → person's label (1 mining, 0 not) for one segmentation."""
    rows = await db.fetch(
        "SELECT segment_index, label FROM superpixel_labels WHERE labels_key = %s", labels_key
    )
    return {int(i): int(label) for i, label in rows}


@dataclass(frozen=True)
class ReviewedSuperpixel:
    """A superpixel a person labelled, with the blobs needed to crop it."""

    tile_id: str
    imagery_date: str
    image_key: str
    labels_key: str
    segment_index: int
    label: int  # 1 = mining


async def reviewed_superpixels(db: Database) -> list[ReviewedSuperpixel]:
    """Every labelled superpixel (tile image key, labels key, segment index, label)."""
    rows = await db.fetch(
        """SELECT tile_id, imagery_date, image_key, labels_key, segment_index, label
           FROM superpixel_labels WHERE image_key <> '' AND labels_key <> ''
           ORDER BY tile_id, imagery_date, labels_key, segment_index"""
    )
    return [
        ReviewedSuperpixel(str(t), str(d), str(i), str(k), int(s), int(lab))
        for t, d, i, k, s, lab in rows
    ]


async def create_audit(db: Database, n: int, filters: Filters, created_by: str) -> int:
    """Draw a uniform random sample of `n` flagged detections; the new audit's id."""
    where, params = _where(filters)
    async with db.pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            b"INSERT INTO audits (requested, created_by) VALUES (%s, %s) RETURNING audit_id",
            [n, created_by],
        )
        audit_id = int((await cursor.fetchone())[0])  # type: ignore[index]
        await conn.execute(
            f"""INSERT INTO audit_tiles (audit_id, tile_id, imagery_date, model_version)
                SELECT %s, d.tile_id, d.imagery_date, d.model_version {FROM}
                WHERE d.flagged AND {where} ORDER BY random() LIMIT %s""".encode(),
            [audit_id, *params, n],
        )
    return audit_id


async def audit(db: Database, audit_id: int) -> dict[str, Any] | None:
    head = await _rows(
        db,
        "SELECT audit_id, requested, created_by, created_at FROM audits WHERE audit_id = %s",
        [audit_id],
    )
    if not head:
        return None
    tiles = await _rows(
        db,
        """SELECT a.tile_id, a.imagery_date, a.model_version, r.verdict, r.reviewer
           FROM audit_tiles a LEFT JOIN reviews r
             ON r.tile_id = a.tile_id AND r.imagery_date = a.imagery_date
            AND r.model_version = a.model_version
           WHERE a.audit_id = %s ORDER BY a.tile_id, a.imagery_date, a.model_version""",
        [audit_id],
    )
    return {**head[0], "tiles": tiles}
