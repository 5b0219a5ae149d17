"""Exports of the detections matching the map's filters, GeoJSON and CSV, streamed as the rows
arrive from a server-side cursor (memory holds one batch, however many detections match), on
the downloads' own connections within the budget (`limits.py`)."""

from __future__ import annotations

from aiohttp import web

from amberscan.web import core, params, queries
from amberscan.web.responses import stream_csv, stream_geojson
from amberscan.web.state import BUDGET, DOWNLOADS_DB

routes = web.RouteTableDef()


@routes.get("/api/export.geojson")
async def export_geojson(request: web.Request) -> web.StreamResponse:
    filters = params.parse_filters(request.query, bbox_required=False)
    async with request.app[BUDGET].download(request):
        rows = queries.stream_detections(request.app[DOWNLOADS_DB], filters)
        return await stream_geojson(request, rows, "amberscan-detections.geojson", core.feature_of)


@routes.get("/api/export.csv")
async def export_csv(request: web.Request) -> web.StreamResponse:
    filters = params.parse_filters(request.query, bbox_required=False)
    async with request.app[BUDGET].download(request):
        rows = queries.stream_detections(request.app[DOWNLOADS_DB], filters)
        return await stream_csv(request, rows, "amberscan-detections.csv", core.csv_text)
