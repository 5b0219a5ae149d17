"""The evidence pack of a site (issue 28 item 4): what an inspector attaches to a complaint.

A site is a cluster of adjacent flagged tiles (8-neighbours at one zoom, each tile's newest
detection, outside the exclusion areas) around the tile asked for; it must hold a tile a
reviewer confirmed. The pack is one ZIP that opens without a network connection:

- `index.html` — the site's facts and every image, no script and no remote reference;
- `manifest.json` — coordinates (centre, bounds, each tile's), per tile and imagery date the
  detection (model and backbone versions, imagery and detection dates, flagged, positives,
  scores, damaged hectares), the review with its history (who, what, when), the mapped area per
  vintage, and the sample-based area estimate of every design whose region holds the site
  (the site as a reporting unit);
- `damaged_area.geojson` — the damaged-area polygons (positive superpixels) of each detection;
- `images/TILE_DATE.png` — each vintage's imagery, and `images/TILE_DATE_damage.png` the same
  with the damaged area outlined in red.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import shapely
import shapely.geometry as sg
from numpy.typing import NDArray
from skimage.segmentation import find_boundaries

from amberscan.common.db import Database
from amberscan.vision.imageio import encode_png
from amberscan.vision.segment import Segmentation
from amberscan.web import area_queries, review_queries
from amberscan.web.core import BadRequest, Filters, implied_threshold
from amberscan.web.queries import COLUMNS, FROM, fetch_dicts, where_clause

MAX_SITE_TILES = 64
_RED = np.array([230, 30, 30], dtype=np.uint8)


def cluster(
    start: tuple[int, int], flagged: Iterable[tuple[int, int]], limit: int
) -> list[tuple[int, int]]:
    """The (x, y) tiles connected to `start` through 8-neighbours among `flagged` (at most
    `limit`, nearest first), `start` first."""
    pool = set(flagged)
    seen = [start]
    known = {start}
    for x, y in seen:
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                n = (x + dx, y + dy)
                if n in pool and n not in known and len(seen) < limit:
                    known.add(n)
                    seen.append(n)
    return seen


def damage_picture(
    image: NDArray[np.uint8], segmentation: Segmentation, positive: Sequence[int]
) -> NDArray[np.uint8]:
    """`image` with the damaged area (the positive superpixels) outlined in red."""
    out = image[..., :3].copy()
    if positive:
        mask = np.isin(segmentation.labels, np.asarray(positive))
        edge = find_boundaries(mask.astype(np.int8), mode="thick")  # type: ignore[no-untyped-call]
        out[edge] = _RED
    return out


def index_html(manifest: dict[str, Any]) -> str:
    """The pack's page: facts and images, every value escaped, nothing remote."""
    e = html.escape
    rows = []
    for t in manifest["detections"]:
        review = t["review"]
        verdict = (
            f"{e(review['verdict'])} by {e(review['reviewer'])} at {e(str(review['reviewed_at']))}"
            if review["verdict"]
            else "unreviewed"
        )
        rows.append(
            f"<tr><td>{e(t['tile_id'])}</td><td>{e(t['imagery_date'] or 'undated')}</td>"
            f"<td>{e(t['model_version'])}</td><td>{'yes' if t['flagged'] else 'no'}</td>"
            f"<td>{t['hectares']:.3f}</td><td>{verdict}</td>"
            f'<td><img src="{e(t["image"])}" width="256" alt="imagery">'
            f'<img src="{e(t["damage_image"])}" width="256" alt="damaged area"></td></tr>'
        )
    estimates = "".join(
        f"<li>design {d['design']} ({e(d['year'] or 'newest')}, {e(d['model_version'])}): "
        f"{e(json.dumps(d['estimate']['mining_ha']))} ha of "
        f"{'new mining since ' + e(d['year_before']) if d['kind'] == 'change' else 'mining'}, mapped "
        f"{d['estimate']['mapped_ha']:.3f} ha</li>"
        for d in manifest["area_estimates"]
    )
    lon, lat = manifest["centre"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amberscan evidence: site {e(manifest["site"])}</title>
<style>body{{font-family:sans-serif}}td,th{{border:1px solid #999;padding:3px;vertical-align:top}}</style></head>
<body><h1>Site {e(manifest["site"])}</h1>
<p>Centre {lat:.6f} N, {lon:.6f} E; bounds {e(json.dumps(manifest["bounds"]))} (WGS84);
{len(manifest["tiles"])} tiles; made {e(manifest["generated_at"])} by amberscan {e(manifest["software"])}.</p>
<p>Mapped damaged area per vintage (ha): {e(json.dumps(manifest["mapped_ha_by_vintage"]))}</p>
<h2>Sample-based area estimates</h2><ul>{estimates or "<li>no sampling design covers the site</li>"}</ul>
<h2>Detections</h2>
<table><tr><th>tile</th><th>imagery</th><th>model</th><th>flagged</th><th>damaged ha</th><th>review</th><th>images</th></tr>
{"".join(rows)}</table>
<p>Damaged-area polygons: damaged_area.geojson; every figure: manifest.json.</p>
</body></html>
"""


async def site_rows(db: Database, tile_id: str) -> list[dict[str, Any]]:
    """Every detection (newest run per imagery date) of the site's tiles, oldest vintage first."""
    start = await fetch_dicts(
        db,
        f"SELECT d.z, d.x, d.y {FROM} WHERE d.tile_id = %s AND d.flagged AND x.reason IS NULL"
        " ORDER BY d.detected_at DESC LIMIT 1",
        [tile_id],
    )
    if not start:
        raise BadRequest(f"tile {tile_id} is not flagged in any vintage: not a site")
    z, x0, y0 = (int(start[0][k]) for k in ("z", "x", "y"))
    span = MAX_SITE_TILES
    where, params = where_clause(Filters())
    near = await fetch_dicts(
        db,
        f"""SELECT d.x, d.y {FROM} WHERE {where} AND d.flagged AND x.reason IS NULL
              AND d.z = %s AND d.x BETWEEN %s AND %s AND d.y BETWEEN %s AND %s""",
        [*params, z, x0 - span, x0 + span, y0 - span, y0 + span],
    )
    tiles = cluster((x0, y0), ((int(r["x"]), int(r["y"])) for r in near), MAX_SITE_TILES)
    rows = await fetch_dicts(
        db,
        f"""SELECT {COLUMNS}, ST_AsGeoJSON(d.positives_geom, 7) AS damage {FROM}
            WHERE d.z = %s AND (d.x, d.y) IN (SELECT * FROM unnest(%s::int[], %s::int[]))
              AND NOT EXISTS (SELECT 1 FROM detections n WHERE n.tile_id = d.tile_id
                              AND n.imagery_date = d.imagery_date
                              AND n.detected_at > d.detected_at)
            ORDER BY d.imagery_date, d.tile_id""",
        [z, [t[0] for t in tiles], [t[1] for t in tiles]],
    )
    if not any(r["verdict"] == "confirmed" for r in rows):
        raise BadRequest(
            f"the site of tile {tile_id} ({len(tiles)} flagged tiles) has no tile a reviewer "
            "confirmed: confirm it before making its evidence pack"
        )
    return rows


async def designs_holding(db: Database, point: tuple[float, float]) -> list[int]:
    rows = await db.fetch(
        "SELECT design_id FROM area_designs WHERE ST_Intersects(region, ST_SetSRID(ST_Point(%s, %s), 4326))"
        " ORDER BY design_id",
        *point,
    )
    return [int(r[0]) for r in rows]


async def pack(db: Database, images: Any, tile_id: str, software: str) -> tuple[str, bytes]:
    """(file name, ZIP bytes) of the evidence pack of the site around `tile_id`.

    Raises:
        BadRequest: the tile is not flagged, or no tile of its site is confirmed.
    """
    rows = await site_rows(db, tile_id)
    outlines = [sg.shape(json.loads(r["geojson"])) for r in rows]
    site_shape = shapely.union_all(outlines)
    west, south, east, north = site_shape.bounds
    centre = ((west + east) / 2, (south + north) / 2)
    files: dict[str, bytes] = {}
    detections = []
    features = []
    by_vintage: dict[str, float] = {}
    for r in rows:
        stem = f"images/{r['tile_id']}_{r['imagery_date'] or 'undated'}"
        picture = damage = b""
        if r["image_key"] and r["labels_key"]:
            tile = await images.tile(r["image_key"], r["labels_key"])
            scores = np.asarray(r["scores"] or [], dtype=np.float64)
            threshold = implied_threshold(list(scores), int(r["positives"]))
            positive = (
                [int(i) for i in np.flatnonzero(scores >= threshold)] if r["positives"] else []
            )

            def render(t: Any = tile, p: list[int] = positive) -> tuple[bytes, bytes]:
                drawn = damage_picture(t.image, t.segmentation, p)
                return encode_png(t.image), encode_png(drawn)

            picture, damage = await asyncio.to_thread(render)
        files[f"{stem}.png"], files[f"{stem}_damage.png"] = picture, damage
        history = await review_queries.history(db, r["tile_id"], r["imagery_date"])
        year = r["imagery_date"][:4] or "undated"
        if r["flagged"]:
            by_vintage[year] = round(by_vintage.get(year, 0.0) + float(r["hectares"]), 4)
        detections.append(
            {
                "tile_id": r["tile_id"],
                "imagery_date": r["imagery_date"],
                "model_version": r["model_version"],
                "backbone_version": r["backbone_version"],
                "scan_id": r["scan_id"],
                "provider": r["provider"],
                "detected_at": r["detected_at"].isoformat(),
                "flagged": r["flagged"],
                "positives": r["positives"],
                "segment_count": r["segment_count"],
                "min_positives": r["min_positives"],
                "hectares": float(r["hectares"]),
                "scores": [round(float(s), 4) for s in r["scores"] or []],
                "bounds": [r["west"], r["south"], r["east"], r["north"]],
                "review": {
                    "verdict": r["verdict"],
                    "reviewer": r["reviewer"],
                    "reviewed_at": None
                    if r["reviewed_at"] is None
                    else r["reviewed_at"].isoformat(),
                    "model_version": r["reviewed_model"],
                    "history": [{**ev, "at": ev["at"].isoformat()} for ev in history],
                },
                "image": f"{stem}.png",
                "damage_image": f"{stem}_damage.png",
            }
        )
        if r["damage"]:
            features.append(
                {
                    "type": "Feature",
                    "geometry": json.loads(r["damage"]),
                    "properties": {
                        "tile_id": r["tile_id"],
                        "imagery_date": r["imagery_date"],
                        "model_version": r["model_version"],
                        "hectares": float(r["hectares"]),
                    },
                }
            )
    estimates = []
    for design_id in await designs_holding(db, centre):
        report = await area_queries.report(db, images, design_id, [("site", site_shape)])
        if report is not None:
            estimates.append(
                {
                    "design": design_id,
                    "kind": report["kind"],  # vintage, or change: new damage from year_before
                    "year_before": report["year_before"],
                    "year": report["year"],
                    "model_version": report["model_version"],
                    "estimate": report["units"][0],
                    "region_estimate": report["estimate"],
                }
            )
    manifest = {
        "site": tile_id,
        "generated_at": datetime.now(UTC).isoformat(),
        "software": software,
        "centre": list(centre),
        "bounds": [west, south, east, north],
        "outline": sg.mapping(site_shape),
        "tiles": sorted({r["tile_id"] for r in rows}),
        "mapped_ha_by_vintage": by_vintage,
        "detections": detections,
        "area_estimates": estimates,
    }
    files["manifest.json"] = json.dumps(manifest, indent=2, default=str).encode()
    files["damaged_area.geojson"] = json.dumps(
        {"type": "FeatureCollection", "features": features}
    ).encode()
    files["index.html"] = index_html(json.loads(files["manifest.json"])).encode()

    def zipped() -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in sorted(files.items()):
                if data:
                    archive.writestr(f"site-{tile_id}/{name}", data)
        return buffer.getvalue()

    return f"amberscan-site-{tile_id}.zip", await asyncio.to_thread(zipped)
