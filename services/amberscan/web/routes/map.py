"""The map page and its API: configuration, detections in view (GeoJSON), the summary."""

from __future__ import annotations

from aiohttp import web

from amberscan.web import core, params, queries
from amberscan.web.responses import json_response, page
from amberscan.web.state import DB, SETTINGS

routes = web.RouteTableDef()


@routes.get("/")
async def map_page(request: web.Request) -> web.StreamResponse:
    return page("map.html")


@routes.get("/api/config")
async def config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return json_response(
        {"tiles_url": settings.map_tiles_url, "writes_enabled": bool(settings.web_token)}
    )


@routes.get("/api/detections")
async def detections(request: web.Request) -> web.Response:
    filters = params.parse_filters(request.query, bbox_required=True)
    rows = await queries.detections(request.app[DB], filters)
    matched = int(rows[0]["matched"]) if rows else 0
    if not rows and filters.offset:
        matched = await queries.count_detections(request.app[DB], filters)
    return json_response(core.feature_collection(rows, matched=matched, offset=filters.offset))


@routes.get("/api/summary")
async def summary(request: web.Request) -> web.Response:
    filters = params.parse_filters(request.query, bbox_required=False)
    return json_response(await queries.summary(request.app[DB], filters))
