"""Sample-based area estimates (issue 28): draw (or resume) a stratified sampling design of a
region, vintage and model, review its tiles through the reviews, and read the mining area with
its 95 % interval, the map's user's and producer's accuracy, per reporting unit
(`area_queries` has the design and the estimators' use)."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from amberscan.errors import InvalidRegion
from amberscan.geo.tiles import parse_geojson
from amberscan.web import area_queries, params
from amberscan.web.core import BadRequest
from amberscan.web.responses import json_response, page
from amberscan.web.state import DB, IMAGES

routes = web.RouteTableDef()


@routes.get("/area")
@routes.get("/area/{design_id}")  # area.js draws a design on /area, steps through it on /area/ID
async def area_page(request: web.Request) -> web.StreamResponse:
    if "design_id" in request.match_info:
        design_id(request)
    return page("area.html")


def design_id(request: web.Request) -> int:
    try:
        return int(request.match_info["design_id"])
    except ValueError:
        raise BadRequest("design id: an integer") from None


def design_request(data: dict[str, Any]) -> area_queries.DesignRequest:
    """A design's parameters from a request body (or the `amberscan area` options)."""
    if data.get("bbox"):
        west, south, east, north = params.parse_bbox(str(data["bbox"]))
        text = json.dumps(
            {
                "type": "Polygon",
                "coordinates": [
                    [[west, south], [east, south], [east, north], [west, north], [west, south]]
                ],
            }
        )
    elif isinstance(data.get("region"), dict):
        text = json.dumps(data["region"])
    else:
        raise BadRequest("give the region: bbox W,S,E,N or region, a GeoJSON polygon")
    try:
        region = parse_geojson(text)
    except InvalidRegion as error:
        raise BadRequest(f"region: {error}") from None
    filters = params.parse_filters(
        {k: str(data[k]) for k in ("year", "model") if data.get(k)}, bbox_required=False
    )
    # A change design: new damage from the vintage `year_before` to `year`.
    before = params.parse_filters(
        {"year": str(data["year_before"])} if data.get("year_before") else {},
        bbox_required=False,
    ).year
    n = data.get("n")
    target = data.get("target_se_ha")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise BadRequest("n: a positive integer")
    if target is not None and (
        not isinstance(target, int | float) or isinstance(target, bool) or not target > 0
    ):
        raise BadRequest("target_se_ha: a positive number of hectares")
    if (n is None) == (target is None):
        raise BadRequest("give the sample size n or the target standard error target_se_ha")
    seed = data.get("seed", 28)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise BadRequest("seed: a non-negative integer")
    high = data.get("high_score", area_queries.DEFAULT_HIGH_SCORE)
    if not isinstance(high, int | float) or isinstance(high, bool) or not 0 < high <= 1:
        raise BadRequest("high_score: a score in (0, 1]")
    blind = data.get("blind", True)
    if not isinstance(blind, bool):
        raise BadRequest("blind: true or false")
    strata = data.get("strata")
    user = tuple(area_queries.units_of(strata, 50)) if strata else ()
    return area_queries.DesignRequest(
        region=region,
        year=filters.year,
        model=filters.model,
        seed=seed,
        n=n,
        target_se_ha=None if target is None else float(target),
        high_score=float(high),
        blind=blind,
        user_strata=user,
        created_by=params.reviewer(data.get("reviewer")),
        year_before=before,
    )


@routes.post("/api/area/designs")
async def post_design(request: web.Request) -> web.Response:
    """Draw the design of a region, vintage and model; the stored one when it exists (200)."""
    req = design_request(await params.body(request))
    if req.target_se_ha is not None and not math.isfinite(req.target_se_ha):
        raise BadRequest("target_se_ha: a finite number")
    found, drawn = await area_queries.create_design(request.app[DB], req)
    return json_response(await _report(request, found), status=201 if drawn else 200)


@routes.get("/api/area/designs")
async def list_designs(request: web.Request) -> web.Response:
    """The designs (their estimates, without the sampled tiles), newest first: of a vintage
    (`year`; absent: any; empty: each tile's newest, as the map's default), `model`, `kind`
    (vintage or change) and whose region meets `bbox`; at most `limit` (20)."""
    query = request.query
    filters = params.parse_filters(
        {k: query[k] for k in ("year", "model", "bbox") if k in query}, bbox_required=False
    )
    kind = query.get("kind", "")
    if kind not in ("", "vintage", "change"):
        raise BadRequest(f"kind={kind[:20]!r}: vintage or change")
    limit = params.int_param(query, "limit", 20, 1, 100)
    found = await area_queries.matching_designs(
        request.app[DB],
        year=filters.year if "year" in query else None,
        model=filters.model,
        kind=kind,
        bbox=filters.bbox,
        limit=limit,
    )
    designs = await area_queries.reports(request.app[DB], request.app[IMAGES], found)
    return json_response({"designs": designs})


@routes.get("/api/area/designs/{design_id}")
async def get_design(request: web.Request) -> web.Response:
    return json_response(await _report(request, design_id(request)))


@routes.post("/api/area/designs/{design_id}/estimate")
async def post_estimate(request: web.Request) -> web.Response:
    """The estimate per reporting unit: body `{"units": FeatureCollection of named polygons}`."""
    data = await params.body(request, limit=params.EXCLUSIONS_MAX_BODY)
    units = area_queries.units_of(data.get("units"))
    return json_response(await _report(request, design_id(request), units))


async def _report(
    request: web.Request, found: int, units: list[tuple[str, Any]] | None = None
) -> dict[str, Any]:
    report = await area_queries.report(request.app[DB], request.app[IMAGES], found, units)
    if report is None:
        raise web.HTTPNotFound(text=f"no area design {found}")
    return report


@routes.get("/api/sites/{tile_id}/evidence.zip")
async def evidence_pack(request: web.Request) -> web.Response:
    """The evidence pack (a ZIP that opens offline) of the confirmed site around a flagged tile:
    imagery of each vintage with the damaged area drawn, its GeoJSON, scores, versions, dates,
    verdicts with who and when, coordinates and the area estimates (`web/evidence.py`)."""
    from amberscan import __version__
    from amberscan.web import evidence

    name, data = await evidence.pack(
        request.app[DB], request.app[IMAGES], params.tile_id(request), __version__
    )
    return web.Response(
        body=data,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
