"""Exports of the detections matching the map's filters, GeoJSON and CSV, streamed as the rows
arrive from a server-side cursor (memory holds one batch, however many detections match)."""

from __future__ import annotations

from aiohttp import web

from amberscan.web import core, params, queries
from amberscan.web.responses import FEATURES_HEAD, FEATURES_TAIL, features_chunk, stream_rows
from amberscan.web.state import DB

routes = web.RouteTableDef()


@routes.get("/api/export.geojson")
async def export_geojson(request: web.Request) -> web.StreamResponse:
    filters = params.parse_filters(request.query, bbox_required=False)
    return await stream_rows(
        request,
        queries.stream_detections(request.app[DB], filters),
        content_type="application/geo+json",
        filename="amberscan-detections.geojson",
        head=FEATURES_HEAD,
        chunk=features_chunk(core.feature_of),
        tail=FEATURES_TAIL,
    )


@routes.get("/api/export.csv")
async def export_csv(request: web.Request) -> web.StreamResponse:
    filters = params.parse_filters(request.query, bbox_required=False)
    return await stream_rows(
        request,
        queries.stream_detections(request.app[DB], filters),
        content_type="text/csv",
        filename="amberscan-detections.csv",
        head=core.csv_text([]),
        chunk=lambda rows, _: core.csv_text(rows, header=False),
    )
