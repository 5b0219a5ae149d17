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


async def _population(
    db: Database, region: BaseGeometry, year: str, model: str
) -> list[dict[str, Any]]:
    """The tiles of the region (centre inside) with their verdict in the vintage: each tile's
    newest detection of that model and year (`queries.where_clause`)."""
    where, params = where_clause(Filters(bbox=region.bounds, year=year, model=model))
    return await fetch_dicts(
        db,
        f"""SELECT d.tile_id, d.imagery_date, d.model_version,
                   d.flagged AND x.reason IS NULL AS mapped,
                   coalesce((SELECT max(s) FROM unnest(d.scores) s), 0)::float8 AS top_score,
                   ST_Area(d.tile_geom::geography) / 10000 AS tile_ha,
                   CASE WHEN d.flagged AND x.reason IS NULL THEN d.hectares ELSE 0 END
                       AS damaged_ha,
                   ST_X(ST_Centroid(d.tile_geom)) AS lon, ST_Y(ST_Centroid(d.tile_geom)) AS lat
            {FROM} WHERE {where}
              AND ST_Intersects(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), ST_Centroid(d.tile_geom))
            ORDER BY d.tile_id""",
        [*params, json.dumps(sg.mapping(region))],
    )


def change_population(
    later: list[dict[str, Any]], earlier: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A change design's population: the tiles with a verdict in both vintages, each with its
    earlier imagery date (`imagery_date_before`), `was_mapped` (flagged then) and, as the map's
    new damage, `mapped` (flagged in the later vintage only) and its damaged area."""
    before = {t["tile_id"]: t for t in earlier}
    out = []
    for t in later:
        b = before.get(t["tile_id"])
        if b is None:
            continue
        new = bool(t["mapped"]) and not b["mapped"]
        out.append(
            {
                **t,
                "imagery_date_before": b["imagery_date"],
                "was_mapped": bool(b["mapped"]),
                "now_mapped": bool(t["mapped"]),
                "mapped": new,
                "damaged_ha": t["damaged_ha"] if new else 0.0,
            }
        )
    return out


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
    population = await _population(db, req.region, req.year, model)
    if req.year_before:
        earlier = await _population(db, req.region, req.year_before, model)
        population = change_population(population, earlier)
        if not population:
            raise BadRequest(
                f"no tile of the region has detections of model {model} in both"
                f" {req.year_before} and {req.year}"
            )
    if not population:
        raise BadRequest(f"no detection of model {model} in the region")
    names = _stratify(population, req)
    order = sorted(set(names), key=lambda s: (STRATUM_ORDER[s.split(" / ")[0]], s))
    members = {s: [i for i, n in enumerate(names) if n == s] for s in order}
    strata = [
        area.Stratum(s, len(members[s]), sum(population[i]["tile_ha"] for i in members[s]))
        for s in order
    ]
    anticipated = [ANTICIPATED[s.split(" / ")[0]] for s in order]
    region_ha = sum(s.total_area for s in strata)
    target = None if req.target_se_ha is None else req.target_se_ha / region_ha
    try:
        sizes = area.plan(strata, anticipated, n=req.n, target_se=target, minimum=MIN_PER_STRATUM)
    except InvalidInput as error:
        raise BadRequest(str(error)) from None
    if sum(sizes) > MAX_SAMPLE:
        raise BadRequest(
            f"the target needs {sum(sizes)} tiles, over {MAX_SAMPLE}: ask for a wider error"
        )
    rng = np.random.default_rng(req.seed)
    picked = [
        int(i)
        for s, k in zip(order, sizes, strict=True)
        for i in rng.choice(members[s], size=k, replace=False)
    ]
    position = {i: p for p, i in enumerate(rng.permutation(picked).tolist())}
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
    async with db.pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            b"""INSERT INTO area_designs (region_key, region, year, model_version, seed,
                   high_score, blind, strata, created_by, kind, year_before)
               VALUES (%s, ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), %s, %s, %s, %s, %s, %s, %s,
                       %s, %s)
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
                json.dumps(summary),
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
        async with (
            conn.cursor() as cursor,
            cursor.copy(
                b"COPY area_tiles (design_id, tile_id, imagery_date, model_version, stratum,"
                b" mapped, top_score, tile_ha, damaged_ha, centre, position, imagery_date_before)"
                b" FROM STDIN"
            ) as copy,
        ):
            for i, t in enumerate(population):
                await copy.write_row(
                    [
                        design_id,
                        t["tile_id"],
                        t["imagery_date"],
                        t["model_version"],
                        names[i],
                        t["mapped"],
                        t["top_score"],
                        t["tile_ha"],
                        t["damaged_ha"],
                        f"SRID=4326;POINT({t['lon']!r} {t['lat']!r})",
                        position.get(i),
                        t.get("imagery_date_before"),
                    ]
                )
    return design_id, True


def _stratify(population: list[dict[str, Any]], req: DesignRequest) -> list[str]:
    """Each tile's stratum: its map stratum (of the change map in a change design), and the
    user's stratum holding its centre."""
    if req.year_before:
        names = [area.change_stratum(t["was_mapped"], t["now_mapped"]) for t in population]
    else:
        names = [
            "flagged"
            if t["mapped"]
            else "high score"
            if t["top_score"] >= req.high_score
            else "rest"
            for t in population
        ]
    if req.user_strata:
        lon = np.array([t["lon"] for t in population])
        lat = np.array([t["lat"] for t in population])
        zone = [""] * len(population)
        for label, shape in req.user_strata:
            for i in np.flatnonzero(shapely.contains_xy(shape, lon, lat)):
                zone[i] = zone[i] or label
        names = [f"{n} / {z}" if z else n for n, z in zip(names, zone, strict=True)]
    return names


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
