"""Exports of the detections matching the map's filters: GeoJSON and CSV downloads."""

from __future__ import annotations

import json

from aiohttp import web

from amberscan.web import core, params, queries
from amberscan.web.state import DB

routes = web.RouteTableDef()


@routes.get("/api/export.geojson")
async def export_geojson(request: web.Request) -> web.Response:
    filters = params.parse_filters(request.query, bbox_required=False)
    rows = await queries.detections(request.app[DB], filters, page=False)
    return web.Response(
        text=json.dumps(core.feature_collection(rows)),
        content_type="application/geo+json",
        headers={"Content-Disposition": 'attachment; filename="amberscan-detections.geojson"'},
    )


@routes.get("/api/export.csv")
async def export_csv(request: web.Request) -> web.Response:
    filters = params.parse_filters(request.query, bbox_required=False)
    rows = await queries.detections(request.app[DB], filters, page=False)
    return web.Response(
        text=core.csv_text(rows),
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="amberscan-detections.csv"'},
    )
