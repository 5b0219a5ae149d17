"""The map at survey scale: Mapbox Vector Tiles from PostGIS, and the aggregates behind them.

`/tiles/detections/{z}/{x}/{y}.mvt` has two kinds of tile:

* zoom >= DETAIL_ZOOM (12): layer `detections`, one feature per zoom-16 scan tile in view (its
  verdict under the filters, as `queries.where_clause` chooses it), at most (2^(16-z) + 2)²
  features, so at most 324 at zoom 12; from DAMAGE_ZOOM (14) also layer `damage`, the
  damaged-area polygons (positive superpixels) of the flagged ones.
* zoom < DETAIL_ZOOM: layer `cells`, aggregated: one feature per grid cell of zoom
  min(z + 6, 15) (at most 64 × 64 = 4,096 features) with the tiles scanned, flagged, the flagged
  share and hectares, read from the materialized view `map_cells` (cells of zoom 11, 13 and 15,
  summed up to the cell zoom).

Every tile is thus bounded by its feature count; `benchmarks/survey_map.py` measures the largest
on 450,000 detections. `MapCells` keeps `map_cells` fresh: refreshed at start when empty, then
whenever detections, reviews or exclusion areas changed (checked every `map_refresh_s`), and
right after a write through the web app. While the detections are few (at most `LIVE_ROWS`) it
is also made current on read: a summary or low-zoom tile that finds the tables changed since the
last refresh (their rows' count and transaction ids) refreshes it first, so the map matches a
scan the moment it ends (#27: right after `make run` the summary said 0 tiles until the next
refresh). Above that, low-zoom tiles and the summary lag the pipeline by up to `map_refresh_s`.
High-zoom tiles and the GeoJSON API always read the detections themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from psycopg import sql

from amberscan.common.db import Database
from amberscan.geo.tiles import Tile
from amberscan.web import queries
from amberscan.web.core import Filters

log = logging.getLogger(__name__)
DETAIL_ZOOM = 12
DAMAGE_ZOOM = 14
CELL_BITS = 6  # a low-zoom tile holds 2^6 × 2^6 cells
LEVELS = (11, 13, 15)
# Every layer's coordinate grid, in units per tile side (the MVT spec's and PostGIS's default).
EXTENT = 4096
# Up to this many detections the aggregates are made current when read (see the module doc): a
# refresh after a change took 0.18 s at 5,000 on 2 cores under load 13 (2,000: 0.08 s; 20,000:
# 0.65 s); checking for a change, 5 ms.
LIVE_ROWS = 5_000
# What the aggregates count, as it stands: each table's rows and the sum of their row versions'
# transaction ids (any insert, update or delete changes one; no statistics lag).
_FINGERPRINT = " || ' ' || ".join(
    f"(SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM {table})"
    for table in ("detections", "reviews", "exclusion_areas")
)


def cell_scope(filters: Filters) -> tuple[str, list[Any]] | None:
    """The `map_cells` condition equivalent to `filters` (bbox aside); None when the cells
    cannot answer (a change view within one model is not aggregated)."""
    if (filters.change and filters.model) or filters.flagged or filters.region:
        return None
    clauses: list[str] = []
    params: list[Any] = []
    if filters.year and filters.model:
        clauses.append("latest_year_model AND year = %s AND model_version = %s")
        params += [filters.year, filters.model]
    elif filters.model:
        clauses.append("latest_model AND model_version = %s")
        params.append(filters.model)
    elif filters.year:
        clauses.append("latest_year AND year = %s")
        params.append(filters.year)
    else:
        clauses.append("latest")
    if filters.review:
        clauses.append("review = %s")
        params.append(filters.review)
    if filters.change:
        clauses.append("change = ANY(%s)")
        params.append(["new", "gone"] if filters.change == "changed" else [filters.change])
    return " AND ".join(clauses), params


def _detail_sql(filters: Filters, z: int, x: int, y: int) -> tuple[str, list[Any]]:
    tiled = Filters(**{**filters.__dict__, "bbox": Tile(x, y, z).bounds()})
    where, params = queries.where_clause(tiled)
    change = "''"
    change_params: list[Any] = []
    if filters.year and filters.year != "unknown":
        from amberscan.common import changes

        previous = changes.previous_flagged("d", bool(filters.model))
        change = (
            f"CASE WHEN {previous} IS NULL THEN 'first' WHEN d.flagged = {previous} THEN 'same'"
            " WHEN d.flagged THEN 'new' ELSE 'gone' END"
        )
        side = [filters.year] + ([filters.model] if filters.model else [])
        change_params = side * 2
    damage = ""
    if z >= DAMAGE_ZOOM:
        damage = f""" || coalesce((SELECT ST_AsMVT(g, 'damage', {EXTENT}, 'geom') FROM (
            SELECT ST_AsMVTGeom(ST_Transform(positives_geom, 3857), (SELECT env FROM t),
                                {EXTENT}, 64, true) AS geom, tile_id, hectares
            FROM rows WHERE {queries.damaged_area("")}) g), ''::bytea)"""
    query = f"""
WITH t AS (SELECT ST_TileEnvelope(%s, %s, %s) AS env),
rows AS (
    SELECT d.tile_id, d.imagery_date, d.model_version, d.flagged, d.positives,
           d.segment_count, d.min_positives, round(d.hectares::numeric, 3)::float8 AS hectares,
           round(coalesce((SELECT max(s) FROM unnest(d.scores) s), 0)::numeric, 3)::float8
               AS max_score,
           {queries.REVIEW_STATE} AS review, coalesce(r.reviewer, '') AS reviewer,
           d.demo, d.provider = 'synthetic' AS synthetic, {change} AS change,
           x.reason IS NOT NULL AS excluded, coalesce(x.reason, '') AS exclusion_reason,
           d.tile_geom, d.positives_geom
    {queries.FROM} WHERE {where}
)
SELECT coalesce((SELECT ST_AsMVT(f, 'detections', {EXTENT}, 'geom') FROM (
    SELECT ST_AsMVTGeom(ST_Transform(tile_geom, 3857), (SELECT env FROM t), {EXTENT}, 64, true)
               AS geom,
           tile_id, imagery_date, model_version, flagged, positives, segment_count,
           min_positives, hectares, max_score, review, reviewer, demo, synthetic, change,
           excluded, exclusion_reason
    FROM rows) f), ''::bytea){damage}"""
    return query, [z, x, y, *change_params, *params]


# The `cells` layer of cell sums `s` (gx, gy at the cell zoom; tiles, flagged, hectares, ...);
# its parameters: the cell zoom, then the tile's z, x, y.
_CELLS = f"""
SELECT coalesce(ST_AsMVT(c, 'cells', {EXTENT}, 'geom'), ''::bytea) FROM (
    SELECT ST_AsMVTGeom(ST_TileEnvelope(%s, gx, gy), ST_TileEnvelope(%s, %s, %s), {EXTENT}, 0, true)
               AS geom,
           tiles, flagged, round(flagged::numeric / tiles, 4)::float8 AS flagged_share,
           round(hectares::numeric, 2)::float8 AS hectares, excluded, demo, synthetic
    FROM"""


def _cells_sql(scope: tuple[str, list[Any]], z: int, x: int, y: int) -> tuple[str, list[Any]]:
    cz = min(z + CELL_BITS, LEVELS[-1])
    level = next(lv for lv in LEVELS if lv >= cz)
    shift = level - cz
    span = level - z
    where, params = scope
    query = f"""{_CELLS} (SELECT cx >> %s AS gx, cy >> %s AS gy, sum(tiles)::int AS tiles,
                 sum(flagged)::int AS flagged, sum(hectares) AS hectares,
                 sum(excluded)::int AS excluded,
                 sum(demo)::int AS demo, sum(synthetic)::int AS synthetic
          FROM map_cells
          WHERE level = %s AND cx >= %s AND cx < %s AND cy >= %s AND cy < %s AND {where}
          GROUP BY 1, 2) s
    WHERE tiles > 0) c"""
    return query, [
        cz,
        z,
        x,
        y,
        shift,
        shift,
        level,
        x << span,
        (x + 1) << span,
        y << span,
        (y + 1) << span,
        *params,
    ]


def _live_cells_sql(filters: Filters, z: int, x: int, y: int) -> tuple[str, list[Any]]:
    """Cells aggregated from the detections themselves (what `map_cells` does not hold)."""
    tiled = Filters(**{**filters.__dict__, "bbox": Tile(x, y, z).bounds()})
    where, params = queries.where_clause(tiled)
    cz = min(z + CELL_BITS, LEVELS[-1])
    query = f"""{_CELLS} (SELECT d.x >> (d.z - %s) AS gx, d.y >> (d.z - %s) AS gy, count(*)::int AS tiles,
                 count(*) FILTER (WHERE d.flagged AND x.reason IS NULL)::int AS flagged,
                 coalesce(sum(d.hectares) FILTER (WHERE d.flagged AND x.reason IS NULL), 0)
                     AS hectares,
                 count(*) FILTER (WHERE d.flagged AND x.reason IS NOT NULL)::int AS excluded,
                 count(*) FILTER (WHERE d.demo)::int AS demo,
                 count(*) FILTER (WHERE d.provider = 'synthetic')::int AS synthetic
          {queries.FROM} WHERE d.z >= %s AND {where} GROUP BY 1, 2) s) c"""
    return query, [cz, z, x, y, cz, cz, cz, *params]


async def vector_tile(db: Database, filters: Filters, z: int, x: int, y: int) -> bytes:
    """The MVT bytes of tile z/x/y under `filters` (empty bytes for an empty tile)."""
    if z >= DETAIL_ZOOM:
        query, params = _detail_sql(filters, z, x, y)
    else:
        scope = cell_scope(filters)
        query, params = _cells_sql(scope, z, x, y) if scope else _live_cells_sql(filters, z, x, y)
    rows = await db.fetch(query, *params)
    return bytes(rows[0][0]) if rows and rows[0][0] is not None else b""


class MapCells:
    """Keeps the materialized view `map_cells` fresh for one schema (see the module doc)."""

    def __init__(self, db: Database, interval_s: float) -> None:
        self.db = db
        self.interval_s = interval_s
        self.wanted = asyncio.Event()
        self.seen: tuple[Any, ...] | None = None
        self.refreshed_at = 0.0
        self.last_s = 0.0
        self.large_until = 0.0
        self.fingerprint = ""
        self.current_lock = asyncio.Lock()

    def touch(self) -> None:
        """A write changed what the aggregates count: refresh soon."""
        self.wanted.set()

    async def version(self) -> tuple[Any, ...]:
        rows = await self.db.fetch(
            "SELECT (SELECT max(detected_at) FROM detections),"
            " (SELECT coalesce(max(event_id), 0) FROM review_events),"
            " (SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
            "   WHERE relid = 'detections'::regclass),"
            " (SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
            "   WHERE relid = 'reviews'::regclass),"
            " (SELECT coalesce(max(created_at), 'epoch') || ' ' || count(*) FROM exclusion_areas)"
        )
        return tuple(rows[0])

    async def populated(self) -> bool:
        rows = await self.db.fetch(
            "SELECT relispopulated FROM pg_class WHERE oid = 'map_cells'::regclass"
        )
        return bool(rows and rows[0][0])

    async def current(self) -> bool:
        """Make the aggregates current if the detections are few (at most LIVE_ROWS, counted
        with a bound): refreshed now when the tables changed since the last refresh, waiting
        for another process's refresh rather than skipping it. True if they are current; False
        when the detections are many (the answer kept for `interval_s`: data rarely shrinks)."""
        if time.monotonic() < self.large_until:
            return False
        rows = await self.db.fetch(
            "SELECT count(*) FROM (SELECT 1 FROM detections LIMIT %s) few", LIVE_ROWS + 1
        )
        if int(rows[0][0]) > LIVE_ROWS:
            self.large_until = time.monotonic() + self.interval_s
            return False
        fingerprint = str((await self.db.fetch(f"SELECT {_FINGERPRINT}"))[0][0])
        if fingerprint != self.fingerprint:
            async with self.current_lock:  # one refresh for a burst of requests
                if fingerprint != self.fingerprint:
                    await self.refresh(wait=True)
                    self.fingerprint = fingerprint
        return True

    async def refresh(self, wait: bool = False) -> bool:
        """Refresh now unless another process of this schema is doing it (with `wait`, once it
        is done); True if done."""
        version = await self.version()
        concurrently = await self.populated()
        started = time.perf_counter()
        async with self.db.pool.connection() as conn, conn.transaction():
            if wait:
                await conn.execute(
                    b"SELECT pg_advisory_xact_lock(hashtext('amberscan-map-cells:' || %s))",
                    [self.db.schema],
                )
            else:
                lock = await conn.execute(
                    b"SELECT pg_try_advisory_xact_lock(hashtext('amberscan-map-cells:' || %s))",
                    [self.db.schema],
                )
                if not (await lock.fetchone() or [False])[0]:
                    return False
            await conn.execute(b"SET LOCAL work_mem = '128MB'")
            # The view's estimated cost (its exclusion-area probe per detection) passes the JIT's
            # thresholds: compiling took 2.9 s of a 3.3 s refresh of 20,000 detections. Without
            # it, under load ~15: 0.9 s instead of 4.5 s (20,000), 3.0 s instead of 6.2 s (100,000).
            await conn.execute(b"SET LOCAL jit = off")
            # The app's own work, not a request's: no statement timeout (it runs in the background).
            await conn.execute(b"SET LOCAL statement_timeout = 0")
            statement = "REFRESH MATERIALIZED VIEW {} map_cells"
            await conn.execute(
                sql.SQL(statement).format(sql.SQL("CONCURRENTLY" if concurrently else ""))
            )
        self.seen = version
        self.refreshed_at = time.time()
        self.last_s = time.perf_counter() - started
        log.info("map_cells refreshed in %.2f s", self.last_s)
        return True

    async def ensure(self) -> None:
        """Populate the view if it is empty (the app's start)."""
        if not await self.populated():
            await self.refresh()

    async def run(self) -> None:
        """Refresh whenever the data changed, at most every `interval_s` (until cancelled)."""
        while True:
            touched = True
            try:
                await asyncio.wait_for(self.wanted.wait(), self.interval_s)
            except TimeoutError:
                touched = False
            self.wanted.clear()
            try:
                if touched or await self.version() != self.seen or not await self.populated():
                    await self.refresh()
            except Exception as error:  # noqa: BLE001 - a failed refresh is retried next round
                log.warning("map_cells refresh failed: %s", error)
            await asyncio.sleep(min(self.interval_s, max(1.0, self.last_s)))
