"""The map page and its API: configuration, vector tiles, detections in view (GeoJSON), the
summary."""

from __future__ import annotations

import contextlib
import hashlib

from aiohttp import web

from amberscan.web import core, exclusion_queries, params, queries, vector_tiles
from amberscan.web.responses import json_response, page
from amberscan.web.state import BUDGET, DB, MAP_CELLS, SETTINGS

routes = web.RouteTableDef()
MVT = "application/vnd.mapbox-vector-tile"


@routes.get("/")
async def map_page(request: web.Request) -> web.StreamResponse:
    return page("map.html")


@routes.get("/api/config")
async def config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return json_response(
        {
            "tiles_url": settings.web.map_tiles_url,
            "writes_enabled": bool(settings.web.token),
            "detail_zoom": vector_tiles.DETAIL_ZOOM,
            "damage_zoom": vector_tiles.DAMAGE_ZOOM,
        }
    )


@routes.get("/tiles/detections/{z}/{x}/{y}.mvt")
async def detection_tile(request: web.Request) -> web.Response:
    """One vector tile of the detections under the map's filters (see `vector_tiles`)."""
    z, x, y = params.tile_coords(request)
    filters = params.parse_filters(request.query, bbox_required=False)
    if filters.bbox is not None:
        raise core.BadRequest("bbox: a vector tile covers its own z/x/y; leave bbox out")
    if z < vector_tiles.DETAIL_ZOOM:
        await request.app[MAP_CELLS].current()  # at once after a scan, while data is small
    if z < vector_tiles.DETAIL_ZOOM and vector_tiles.cell_scope(filters) is None:
        # An overview the aggregates cannot answer: counted from the detections, heavy.
        async with request.app[BUDGET].heavy(request):
            body = await vector_tiles.vector_tile(request.app[DB], filters, z, x, y)
    else:
        body = await vector_tiles.vector_tile(request.app[DB], filters, z, x, y)
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=MVT, headers=headers)


@routes.get("/api/detections")
async def detections(request: web.Request) -> web.Response:
    filters = params.parse_filters(
        request.query, bbox_required=True, max_page=request.app[SETTINGS].web.max_page
    )
    rows = await queries.detections(request.app[DB], filters)
    matched = int(rows[0]["matched"]) if rows else 0
    if not rows and filters.offset:
        matched = await queries.count_detections(request.app[DB], filters)
    return json_response(core.feature_collection(rows, matched=matched, offset=filters.offset))


@routes.get("/api/summary")
async def summary(request: web.Request) -> web.Response:
    filters = params.parse_filters(request.query, bbox_required=False)
    cells = request.app[MAP_CELLS]
    await cells.current()  # at once after a scan, while data is small
    scope = vector_tiles.cell_scope(filters) if await cells.populated() else None
    # From the aggregates, a summary is light; counted from the detections, heavy.
    async with request.app[BUDGET].heavy(request) if scope is None else contextlib.nullcontext():
        document = await queries.summary(request.app[DB], filters, scope)
        document["excluded"]["by_reason"] = await exclusion_queries.by_reason(
            request.app[DB], filters
        )
    document["aggregates_at"] = cells.refreshed_at or None
    return json_response(document)
