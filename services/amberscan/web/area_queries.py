"""Sample-based area estimates (issue 28): the sampling design in PostGIS and its estimate.

A design is drawn once per (region, vintage, model), reproducibly from its seed, and stored with
its frozen population (`area_tiles`), so drawing it again resumes it and the estimate always
refers to the tiles it was drawn from. The strata are the map's own: `flagged` (flagged tiles
outside the exclusion areas, the map's mining class), `high score` (unflagged tiles whose best
superpixel scores at least `high_score`: where the omissions hide), `rest`; with the user's
strata (named polygons) each is split by the polygon holding the tile's centre. Sample sizes
come from `model.area.plan` (a target standard error of the mining area, or `n`), at least
`MIN_PER_STRATUM` per stratum; the sampled tiles are put in one random review order, so the
tiles reviewed so far, in that order, are a stratified random sample at every step.

The reference observation of a sampled tile is its review: rejected, no mining; confirmed, the
area of the superpixels a reviewer marked as mining (an area-weighted observation), or the whole
tile when none is marked (a binary one). The estimate (`model.area.estimate`) gives the mining
area with its standard error and 95 % interval, the map's user's, producer's and overall
accuracy, beside the mapped area; per reporting unit (polygons the user gives) by domain
estimation: the tiles whose centre lies outside the unit count as zero.

A change design (`year_before`) estimates the new damage between two vintages: its population
is the tiles with a verdict in both, on the change map's strata (`model.area.change_stratum`),
and a sampled tile's observation comes from its reviews at both dates (`model.area.new_damage`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
import shapely.geometry as sg
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from amberscan.common.db import Database
from amberscan.errors import InvalidInput
from amberscan.geo.tiles import Tile, pixel_area_m2
from amberscan.model import area
from amberscan.web.core import BadRequest, Filters
from amberscan.web.queries import FROM, fetch_dicts, where_clause

MAP_STRATA = ("flagged", "high score", "rest")
# A change design's strata, from the change map of its two vintages: flagged in the later one
# only (the map's new damage), flagged in both, flagged in neither or no longer.
CHANGE_STRATA = area.CHANGE_STRATA
# Anticipated share of mining (of new mining, in a change design) per map stratum (the sample
# size's S_h): most flagged tiles are mining, some high-score ones, very few of the rest; a tile
# flagged at both dates seldom holds mining it did not hold before.
ANTICIPATED = {
    "flagged": 0.7,
    "high score": 0.15,
    "rest": 0.005,
    "new": 0.6,
    "both": 0.1,
    "neither": 0.005,
}
STRATUM_ORDER = {name: i for i, name in enumerate(MAP_STRATA + CHANGE_STRATA)}
DEFAULT_HIGH_SCORE = 0.3
MIN_PER_STRATUM = 30
MAX_SAMPLE = 10_000
MAX_EXPORTED = 200  # designs in one export's `area_estimate` layer


@dataclass(frozen=True)
class DesignRequest:
    """What a design is drawn for (the region as a shapely geometry in WGS84)."""

    region: BaseGeometry
    year: str = ""
    model: str = ""
    seed: int = 28
    n: int | None = None
    target_se_ha: float | None = None
    high_score: float = DEFAULT_HIGH_SCORE
    blind: bool = True
    user_strata: tuple[tuple[str, BaseGeometry], ...] = field(default_factory=tuple)
    created_by: str = "web"
    year_before: str = ""  # given: a change design, new damage from this vintage to `year`

    @property
    def kind(self) -> str:
        return "change" if self.year_before else "vintage"


def region_key(region: BaseGeometry) -> str:
    return hashlib.sha256(shapely.normalize(region).wkb).hexdigest()


async def newest_model(db: Database, region: BaseGeometry, year: str) -> str | None:
    """The model of the newest detection in the region and vintage."""
    where, params = where_clause(Filters(bbox=region.bounds, year=year))
    rows = await fetch_dicts(
        db,
        f"""SELECT d.model_version {FROM} WHERE {where}
              AND ST_Intersects(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), ST_Centroid(d.tile_geom))
            ORDER BY d.detected_at DESC LIMIT 1""",
        [*params, json.dumps(sg.mapping(region))],
    )
    return str(rows[0]["model_version"]) if rows else None


async def find_design(
    db: Database, region: BaseGeometry, year: str, model: str, year_before: str = ""
) -> int | None:
    rows = await db.fetch(
        "SELECT design_id FROM area_designs WHERE region_key = %s AND year = %s"
        " AND model_version = %s AND kind = %s AND year_before = %s",
        region_key(region),
        year,
        model,
        "change" if year_before else "vintage",
        year_before,
    )
    return int(rows[0][0]) if rows else None


def _population(region: BaseGeometry, year: str, model: str) -> tuple[str, list[Any]]:
    """The query of the region's tiles (centre inside) with their verdict in the vintage: each
    tile's newest detection of that model and year (`queries.where_clause`)."""
    where, params = where_clause(Filters(bbox=region.bounds, year=year, model=model))
    query = f"""SELECT d.tile_id, d.imagery_date, d.model_version,
                   d.flagged AND x.reason IS NULL AS mapped,
                   coalesce((SELECT max(s) FROM unnest(d.scores) s), 0)::float8 AS top_score,
                   ST_Area(d.tile_geom::geography) / 10000 AS tile_ha,
                   CASE WHEN d.flagged AND x.reason IS NULL THEN d.hectares ELSE 0 END
                       AS damaged_ha,
                   ST_Centroid(d.tile_geom) AS centre
            {FROM} WHERE {where}
              AND ST_Intersects(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), ST_Centroid(d.tile_geom))"""
    return query, [*params, json.dumps(sg.mapping(region))]


# `model.area.change_stratum` (the rule, stated once) as SQL over the earlier (`e`) and later
# (`l`) vintages' flags: its answer for each of the four pairs.
_CHANGE_STRATUM = (
    "CASE "
    + " ".join(
        f"WHEN e.mapped = {str(before).lower()} AND l.mapped = {str(after).lower()} "
        f"THEN '{area.change_stratum(before, after)}'"
        for before in (False, True)
        for after in (False, True)
    )
    + " END"
)


def _population_insert(req: DesignRequest, model: str, design_id: int) -> tuple[str, list[Any]]:
    """The statement that stores a design's population (`area_tiles`), each tile in its stratum:
    its map stratum (`MAP_STRATA`: flagged, else high score at `high_score`, else rest) or, in a
    change design, its stratum on the change map (`model.area.change_stratum`) over the tiles
    with a verdict in both vintages, where `mapped` and the damaged area are the map's new
    damage (flagged in the later vintage only); then ` / ` and the first of the user's strata
    whose polygon holds the tile's centre, if any. In SQL, so that the population of a whole
    survey never passes through the web process."""
    later, later_params = _population(req.region, req.year, model)
    names = [name for name, _ in req.user_strata]
    shapes = [json.dumps(sg.mapping(shape)) for _, shape in req.user_strata]
    zone = """coalesce(' / ' || (SELECT z.name FROM zones z WHERE ST_Contains(z.shape, l.centre)
                                 ORDER BY z.i LIMIT 1), '')"""
    columns = """INSERT INTO area_tiles (design_id, tile_id, imagery_date, model_version,
                     stratum, mapped, top_score, tile_ha, damaged_ha, centre, imagery_date_before)"""
    zones = """zones AS (SELECT u.name, u.i, ST_SetSRID(ST_GeomFromGeoJSON(u.shape), 4326) AS shape
                         FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS u(name, shape, i))"""
    if not req.year_before:
        return (
            f"""WITH {zones}, l AS ({later})
                {columns}
                SELECT %s, l.tile_id, l.imagery_date, l.model_version,
                       CASE WHEN l.mapped THEN 'flagged' WHEN l.top_score >= %s THEN 'high score'
                            ELSE 'rest' END || {zone},
                       l.mapped, l.top_score, l.tile_ha, l.damaged_ha, l.centre, NULL FROM l""",
            [names, shapes, *later_params, design_id, req.high_score],
        )
    earlier, earlier_params = _population(req.region, req.year_before, model)
    return (
        f"""WITH {zones}, l AS ({later}), e AS ({earlier})
            {columns}
            SELECT %s, l.tile_id, l.imagery_date, l.model_version,
                   {_CHANGE_STRATUM} || {zone},
                   l.mapped AND NOT e.mapped, l.top_score, l.tile_ha,
                   CASE WHEN l.mapped AND NOT e.mapped THEN l.damaged_ha ELSE 0 END,
                   l.centre, e.imagery_date
            FROM l JOIN e ON e.tile_id = l.tile_id""",
        [names, shapes, *later_params, *earlier_params, design_id],
    )


# Each stratum's sample: its tiles ranked by a keyed hash of the seed and the tile id (a random
# order that a seed repeats whatever order the rows come in), the first `n` of each; then all
# the sampled tiles put in one review order by a second keyed hash.
_DRAW = b"""
WITH ranked AS (
    SELECT t.tile_id, t.stratum,
           row_number() OVER (PARTITION BY t.stratum
                              ORDER BY md5('sample:' || %(seed)s || ':' || t.tile_id)) AS rank
    FROM area_tiles t WHERE t.design_id = %(design)s),
picked AS (
    SELECT r.tile_id,
           row_number() OVER (ORDER BY md5('order:' || %(seed)s || ':' || r.tile_id)) - 1 AS position
    FROM ranked r JOIN unnest(%(strata)s::text[], %(sizes)s::int[]) AS k(stratum, n)
      ON k.stratum = r.stratum
    WHERE r.rank <= k.n)
UPDATE area_tiles t SET position = p.position FROM picked p
WHERE t.design_id = %(design)s AND t.tile_id = p.tile_id
"""


async def create_design(db: Database, req: DesignRequest) -> tuple[int, bool]:
    """The design of (region, vintage, model): drawn now, or the stored one; (id, drawn now).

    Raises:
        BadRequest: no detection of that model in the region and vintage, or a bad size.
    """
    if req.year_before and (not req.year or req.year_before == req.year):
        raise BadRequest("a change design needs two different vintages: year_before and year")
    model = req.model or await newest_model(db, req.region, req.year)
    if not model:
        raise BadRequest(f"no detection in the region for vintage {req.year or 'any'}")
    existing = await find_design(db, req.region, req.year, model, req.year_before)
    if existing is not None:
        return existing, False
    async with db.pool.connection() as conn, conn.transaction():
        # The design's row first (its id keys the population); an error below rolls it back.
        cursor = await conn.execute(
            b"""INSERT INTO area_designs (region_key, region, year, model_version, seed,
                   high_score, blind, strata, created_by, kind, year_before)
               VALUES (%s, ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), %s, %s, %s, %s, %s, '[]',
                       %s, %s, %s)
               ON CONFLICT (region_key, kind, year_before, year, model_version) DO NOTHING
               RETURNING design_id""",
            [
                region_key(req.region),
                json.dumps(sg.mapping(req.region)),
                req.year,
                model,
                req.seed,
                req.high_score,
                req.blind,
                req.created_by,
                req.kind,
                req.year_before,
            ],
        )
        row = await cursor.fetchone()
        if row is None:  # drawn meanwhile by another request: that one stands
            found = await find_design(db, req.region, req.year, model, req.year_before)
            assert found is not None
            return found, False
        design_id = int(row[0])
        query, params = _population_insert(req, model, design_id)
        await conn.execute(query.encode(), params)
        cursor = await conn.execute(
            b"SELECT stratum, count(*), sum(tile_ha) FROM area_tiles WHERE design_id = %s"
            b" GROUP BY stratum",
            [design_id],
        )
        counted = {str(name): (int(n), float(ha)) for name, n, ha in await cursor.fetchall()}
        if not counted and req.year_before:
            raise BadRequest(
                f"no tile of the region has detections of model {model} in both"
                f" {req.year_before} and {req.year}"
            )
        if not counted:
            raise BadRequest(f"no detection of model {model} in the region")
        order = sorted(counted, key=lambda s: (STRATUM_ORDER[s.split(" / ")[0]], s))
        strata = [area.Stratum(s, *counted[s]) for s in order]
        anticipated = [ANTICIPATED[s.split(" / ")[0]] for s in order]
        region_ha = sum(s.total_area for s in strata)
        target = None if req.target_se_ha is None else req.target_se_ha / region_ha
        try:
            sizes = area.plan(
                strata, anticipated, n=req.n, target_se=target, minimum=MIN_PER_STRATUM
            )
        except InvalidInput as error:
            raise BadRequest(str(error)) from None
        if sum(sizes) > MAX_SAMPLE:
            raise BadRequest(
                f"the target needs {sum(sizes)} tiles, over {MAX_SAMPLE}: ask for a wider error"
            )
        await conn.execute(
            _DRAW, {"seed": str(req.seed), "design": design_id, "strata": order, "sizes": sizes}
        )
        summary = [
            {
                "name": s.name,
                "tiles": s.size,
                "area_ha": s.total_area,
                "anticipated": p,
                "sampled": k,
            }
            for s, p, k in zip(strata, anticipated, sizes, strict=True)
        ]
        await conn.execute(
            b"UPDATE area_designs SET strata = %s WHERE design_id = %s",
            [json.dumps(summary), design_id],
        )
    return design_id, True


async def design(db: Database, design_id: int) -> dict[str, Any] | None:
    """A design with its sampled tiles in review order, each with its current review."""
    head = await fetch_dicts(
        db,
        """SELECT design_id, ST_AsGeoJSON(region, 7) AS region, year, model_version, seed,
                  high_score, blind, strata, created_by, created_at, kind, year_before
           FROM area_designs WHERE design_id = %s""",
        [design_id],
    )
    if not head:
        return None
    tiles = await fetch_dicts(
        db,
        """SELECT t.position, t.tile_id, t.imagery_date, t.model_version, t.stratum, t.mapped,
                  t.tile_ha, t.damaged_ha, ST_X(t.centre) AS lon, ST_Y(t.centre) AS lat,
                  r.verdict, r.reviewer, r.reviewed_at, d.image_key, d.labels_key,
                  t.imagery_date_before, rb.verdict AS verdict_before,
                  rb.reviewer AS reviewer_before, rb.reviewed_at AS reviewed_at_before
           FROM area_tiles t
           LEFT JOIN reviews r ON r.tile_id = t.tile_id AND r.imagery_date = t.imagery_date
           LEFT JOIN reviews rb ON rb.tile_id = t.tile_id
                               AND rb.imagery_date = t.imagery_date_before
           LEFT JOIN detections d ON d.tile_id = t.tile_id AND d.imagery_date = t.imagery_date
                                 AND d.model_version = t.model_version
           WHERE t.design_id = %s AND t.position IS NOT NULL ORDER BY t.position""",
        [design_id],
    )
    return {**head[0], "tiles": tiles}


async def mining_superpixels(db: Database, labels_keys: list[str]) -> dict[str, list[int]]:
    """Labels key → the superpixels people marked as mining in that segmentation."""
    if not labels_keys:
        return {}
    rows = await db.fetch(
        """SELECT labels_key, array_agg(segment_index ORDER BY segment_index)
           FROM superpixel_labels WHERE label = 1 AND labels_key = ANY(%s) GROUP BY 1""",
        labels_keys,
    )
    return {str(k): [int(i) for i in v] for k, v in rows}


async def unit_totals(
    db: Database, design_id: int, unit: BaseGeometry | None = None
) -> dict[str, float]:
    """The design's population (within a reporting unit: the tiles whose centre lies in it):
    the tiles' area, the flagged tiles' area, the map's damaged area, the number of tiles."""
    inside = ""
    params: list[Any] = [design_id]
    if unit is not None:
        inside = " AND ST_Intersects(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), centre)"
        params.append(json.dumps(sg.mapping(unit)))
    rows = await fetch_dicts(
        db,
        f"""SELECT coalesce(sum(tile_ha), 0) AS area_ha,
                   coalesce(sum(tile_ha) FILTER (WHERE mapped), 0) AS mapped_tiles_ha,
                   coalesce(sum(damaged_ha), 0) AS mapped_ha, count(*) AS tiles
            FROM area_tiles WHERE design_id = %s{inside}""",
        params,
    )
    return {k: float(v) for k, v in rows[0].items()}


def reference_ha(tile: dict[str, Any], marked_ha: float | None) -> float | None:
    """A sampled tile's reference mining area: None before its review, 0 when rejected, the
    area of the superpixels marked mining when any are, else the whole tile (binary).

    In a change design (the tile has `imagery_date_before`), its new mining area: 0 when the
    later imagery is rejected or the earlier one confirmed (the mining was there already),
    None while the earlier one is unreviewed, else the later one's mining area."""
    if tile["verdict"] is None:
        later = None
    elif tile["verdict"] == "rejected":
        later = 0.0
    else:
        later = float(tile["tile_ha"])
        later = later if marked_ha is None else min(marked_ha, later)
    if tile.get("imagery_date_before") is None:
        return later
    before = tile.get("verdict_before")
    return area.new_damage(later, None if before is None else before == "confirmed")


async def marked_areas(db: Database, images: Any, tiles: list[dict[str, Any]]) -> dict[str, float]:
    """Tile id → hectares of the superpixels marked mining, for the confirmed tiles with marks
    (the label image gives each superpixel's pixels; `geo.pixel_area_m2` their ground area, as
    the aggregator measures the damaged area)."""
    confirmed = [t for t in tiles if t["verdict"] == "confirmed" and t["labels_key"]]
    marks = await mining_superpixels(db, [t["labels_key"] for t in confirmed])
    out: dict[str, float] = {}
    for t in confirmed:
        chosen = set(marks.get(t["labels_key"], []))
        if not chosen:
            continue
        tile_image = await images.tile(t["image_key"], t["labels_key"])
        segmentation = tile_image.segmentation
        pixels = sum(sp.area_px for sp in segmentation.superpixels if sp.index in chosen)
        width = int(segmentation.labels.shape[1])
        out[t["tile_id"]] = pixels * pixel_area_m2(Tile.from_quadkey(t["tile_id"]), width) / 1e4
    return out


def _interval(value: area.Interval | None, digits: int = 4) -> dict[str, float | None] | None:
    return None if value is None else value.as_dict(digits=digits)


def _estimate_doc(
    result: area.AreaEstimate, totals: dict[str, float], observed: Sequence[float | None]
) -> dict[str, Any]:
    return {
        "mining_ha": _interval(result.area),
        "proportion": _interval(result.proportion, 6),
        "users_accuracy": _interval(result.users),
        "producers_accuracy": _interval(result.producers),
        "overall_accuracy": _interval(result.overall),
        "mapped_ha": round(totals["mapped_ha"], 4),
        "mapped_tiles_ha": round(totals["mapped_tiles_ha"], 4),
        "region_ha": round(totals["area_ha"], 4),
        "tiles": int(totals["tiles"]),
        "reviewed": sum(o is not None for o in observed),
    }


async def report(
    db: Database,
    images: Any,
    design_id: int,
    units: list[tuple[str, BaseGeometry]] | None = None,
) -> dict[str, Any] | None:
    """The design, its progress and the estimate (whole region, then each reporting unit).

    `images` is the web app's `ImageCache` (for the marked superpixels' areas)."""
    found = await design(db, design_id)
    if found is None:
        return None
    tiles = found["tiles"]
    marked = await marked_areas(db, images, tiles)
    refs = [reference_ha(t, marked.get(t["tile_id"])) for t in tiles]
    strata = [area.Stratum(s["name"], s["tiles"], s["area_ha"]) for s in found["strata"]]
    observed = [(t, r) for t, r in zip(tiles, refs, strict=True) if r is not None]

    def observations(inside: NDArray[np.bool_] | None) -> list[area.Observation]:
        return [
            area.Observation(t["stratum"], bool(t["mapped"]), r, float(t["tile_ha"]))
            if inside is None or inside[k]
            else area.Observation(t["stratum"], bool(t["mapped"]), 0.0, 0.0)
            for k, (t, r) in enumerate(observed)
        ]

    whole = await unit_totals(db, design_id)
    result = area.estimate(strata, observations(None), total_area=whole["area_ha"])
    per_unit = []
    for name, shape in units or []:
        lon = np.array([t["lon"] for t, _ in observed])
        lat = np.array([t["lat"] for t, _ in observed])
        inside = shapely.contains_xy(shape, lon, lat) if observed else np.zeros(0, bool)
        totals = await unit_totals(db, design_id, shape)
        unit_result = area.estimate(strata, observations(inside), total_area=totals["area_ha"])
        unit_refs = [r for (t, r), k in zip(observed, inside, strict=True) if k]
        per_unit.append({"name": name, **_estimate_doc(unit_result, totals, unit_refs)})
    blind = bool(found["blind"])
    reviewed = {s: 0 for s in (x.name for x in strata)}
    for t, _ in observed:
        reviewed[t["stratum"]] += 1
    return {
        "id": found["design_id"],
        "kind": found["kind"],
        "region": json.loads(found["region"]),
        "year_before": found["year_before"],
        "year": found["year"],
        "model_version": found["model_version"],
        "seed": found["seed"],
        "high_score": found["high_score"],
        "blind": blind,
        "created_by": found["created_by"],
        "created_at": found["created_at"],
        "strata": [{**s, "reviewed": reviewed[s["name"]]} for s in found["strata"]],
        "sampled": len(tiles),
        "reviewed": len(observed),
        "complete": len(observed) == len(tiles),
        "observations": {
            "area_weighted": sum(1 for t, r in observed if t["tile_id"] in marked),
            "binary": sum(1 for t, r in observed if t["tile_id"] not in marked),
        },
        "estimate": _estimate_doc(result, whole, refs),
        "units": per_unit,
        "tiles": [_tile_doc(t, r, blind) for t, r in zip(tiles, refs, strict=True)],
    }


def _tile_doc(t: dict[str, Any], reference: float | None, blind: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "position": t["position"],
        "tile_id": t["tile_id"],
        "imagery_date": t["imagery_date"],
        "model_version": t["model_version"],
        "review": t["verdict"] or "unreviewed",
        "reviewer": t["reviewer"],
        "reviewed_at": t["reviewed_at"],
        "centre": [t["lon"], t["lat"]],
        "reference_ha": None if reference is None else round(reference, 4),
    }
    if t.get("imagery_date_before") is not None:
        # The judgement of a change design's tile: both vintages' reviews, as new damage or not.
        doc.update(
            imagery_date_before=t["imagery_date_before"],
            review_before=t["verdict_before"] or "unreviewed",
            reviewer_before=t["reviewer_before"],
            reviewed_at_before=t["reviewed_at_before"],
            review="unreviewed" if reference is None else "new" if reference > 0 else "not new",
        )
    if not blind:  # a blind design keeps the map's verdict from the reviewer
        doc.update(stratum=t["stratum"], flagged=bool(t["mapped"]))
    return doc


def units_of(document: Any, limit: int = 200) -> list[tuple[str, BaseGeometry]]:
    """Named reporting units from a GeoJSON Feature or FeatureCollection of polygons (each
    named by its `name` property, else its position).

    Raises:
        BadRequest: not polygons, or more than `limit` of them.
    """
    from amberscan.errors import InvalidRegion
    from amberscan.geo.tiles import parse_geojson

    if isinstance(document, dict) and document.get("type") == "Feature":
        features = [document]
    elif isinstance(document, dict) and isinstance(document.get("features"), list):
        features = document["features"]
    else:
        raise BadRequest("units: a GeoJSON Feature or FeatureCollection of polygons")
    if not 1 <= len(features) <= limit:
        raise BadRequest(f"units: from 1 to {limit} polygons")
    out = []
    for i, feature in enumerate(features):
        props = (feature.get("properties") if isinstance(feature, dict) else None) or {}
        name = props.get("name") if isinstance(props, dict) else None
        label = str(name)[:200] if name not in (None, "") else f"unit {i + 1}"
        try:
            shape = parse_geojson(json.dumps(feature))
        except InvalidRegion as error:
            raise BadRequest(f"units: feature {i}: {error}") from None
        out.append((label, shape))
    return out


async def matching_designs(
    db: Database,
    *,
    year: str | None = None,
    model: str = "",
    kind: str = "",
    bbox: tuple[float, float, float, float] | None = None,
    region_wkt: str = "",
    limit: int = 50,
) -> list[int]:
    """The designs of a vintage (`year`; None: any, "": each tile's newest; a change design's
    later vintage), model, kind, whose region meets `bbox` and `region_wkt`: newest first."""
    clauses: list[str] = ["true"]
    params: list[Any] = []
    if year is not None:
        clauses.append("year = %s")
        params.append(year)
    if model:
        clauses.append("model_version = %s")
        params.append(model)
    if kind:
        clauses.append("kind = %s")
        params.append(kind)
    if bbox is not None:
        clauses.append("ST_Intersects(region, ST_MakeEnvelope(%s, %s, %s, %s, 4326))")
        params += list(bbox)
    if region_wkt:
        clauses.append("ST_Intersects(region, ST_GeomFromText(%s, 4326))")
        params.append(region_wkt)
    rows = await db.fetch(
        f"SELECT design_id FROM area_designs WHERE {' AND '.join(clauses)}"
        " ORDER BY created_at DESC, design_id DESC LIMIT %s",
        *params,
        limit,
    )
    return [int(r[0]) for r in rows]


async def reports(db: Database, images: Any, design_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Each design's report without its sampled tiles (a design deleted meanwhile is left out)."""
    out = []
    for found in design_ids:
        document = await report(db, images, found)
        if document is not None:
            document.pop("tiles")
            out.append(document)
    return out


async def export_reports(db: Database, images: Any, filters: Filters) -> list[dict[str, Any]]:
    """The area estimates an export carries (its `area_estimate` layer): every design of the
    filters' vintage (any without one; a change design by its later vintage) and model whose
    region meets the bbox or region, newest first, at most `MAX_EXPORTED`."""
    found = await matching_designs(
        db,
        year=filters.year or None,
        model=filters.model,
        bbox=filters.bbox,
        region_wkt=filters.region,
        limit=MAX_EXPORTED,
    )
    return await reports(db, images, found)
