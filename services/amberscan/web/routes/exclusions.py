"""Exclusion areas (behind the token for writes): known legal quarries, sand pits, construction
sites. Detections inside one are kept but marked excluded on the map and in the API, and left
out of the flagged hectares; the summary lists them by reason."""

from __future__ import annotations

from aiohttp import web

from amberscan.web import exclusion_queries, params
from amberscan.web.core import BadRequest
from amberscan.web.responses import json_response
from amberscan.web.state import DB, MAP_CELLS

routes = web.RouteTableDef()


@routes.get("/api/exclusions")
async def list_exclusions(request: web.Request) -> web.Response:
    """The areas as a FeatureCollection (each with the detections inside it under the map's
    filters) and the totals by reason."""
    filters = params.parse_filters(request.query, bbox_required=False)
    db = request.app[DB]
    return json_response(
        {
            "type": "FeatureCollection",
            "features": await exclusion_queries.areas(db, filters),
            "by_reason": await exclusion_queries.by_reason(db, filters),
        }
    )


@routes.post("/api/exclusions")
async def add_exclusions(request: web.Request) -> web.Response:
    """Body: a GeoJSON Feature or FeatureCollection of Polygons/MultiPolygons, each with
    `properties.reason` (and optionally `name`, `region`), plus `reviewer`."""
    data = await params.body(request, params.EXCLUSIONS_MAX_BODY)
    areas = params.exclusion_areas(data)
    who = params.reviewer(data.get("reviewer"))
    ids = await exclusion_queries.add(request.app[DB], areas, who)
    request.app[MAP_CELLS].touch()
    return json_response({"ids": ids}, status=201)


@routes.put("/api/exclusions/{area_id}")
async def replace_exclusion(request: web.Request) -> web.Response:
    """Body: one GeoJSON Feature, the area's new polygon and properties."""
    area_id = params.area_id(request)
    data = await params.body(request, params.EXCLUSIONS_MAX_BODY)
    (area, *more) = params.exclusion_areas(data)
    if more:
        raise BadRequest("PUT takes one Feature: the area's new polygon")
    if not await exclusion_queries.replace(
        request.app[DB], area_id, area, params.reviewer(data.get("reviewer"))
    ):
        raise web.HTTPNotFound(text=f"no exclusion area {area_id}")
    request.app[MAP_CELLS].touch()
    return json_response({"id": area_id})


@routes.delete("/api/exclusions/{area_id}")
async def delete_exclusion(request: web.Request) -> web.Response:
    area_id = params.area_id(request)
    if not await exclusion_queries.delete(request.app[DB], area_id):
        raise web.HTTPNotFound(text=f"no exclusion area {area_id}")
    request.app[MAP_CELLS].touch()
    return json_response({"deleted": area_id})
