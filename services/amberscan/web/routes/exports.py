"""Exports of the detections matching the filters (`params.export_request`): GeoJSON, CSV,
GeoPackage and FlatGeobuf, of the tiles and of the damaged areas (`exporting`), and of the
sample-based area estimates (`layer=area_estimate`, one row per design; in a GeoPackage beside the
other two), each on the downloads' own connections within the budget (`limits.py`).

GeoJSON and CSV stream as the rows arrive from a server-side cursor (memory holds one batch,
however many detections match). GeoPackage and FlatGeobuf are written by GDAL from batches of
rows into a temporary file (both formats are finished by seeking back), which is then sent and
removed: memory holds one batch, the disk the file; the database connection is back in the
pool before the file is sent.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from amberscan.web import area_queries, exporting, params
from amberscan.web.core import Filters
from amberscan.web.export_queries import export_rows
from amberscan.web.gdal_files import write_file
from amberscan.web.responses import stream_csv, stream_file, stream_geojson
from amberscan.web.state import BUDGET, DOWNLOADS_DB, IMAGES, THRESHOLDS

routes = web.RouteTableDef()


@routes.get("/api/export.geojson")
async def export_geojson(request: web.Request) -> web.StreamResponse:
    filters, (layer,) = params.export_request(request.query, "geojson")
    estimates = layer == exporting.ESTIMATE_LAYER
    to_feature = exporting.estimate_feature if estimates else exporting.feature
    async with request.app[BUDGET].download(request):
        rows = _rows(request, filters, layer, "geojson")
        return await stream_geojson(
            request, rows, exporting.filename("geojson", layer), to_feature, layer=layer
        )


@routes.get("/api/export.csv")
async def export_csv(request: web.Request) -> web.StreamResponse:
    filters, (layer,) = params.export_request(request.query, "csv")
    estimates = layer == exporting.ESTIMATE_LAYER
    to_csv = exporting.estimate_csv_text if estimates else exporting.csv_text
    async with request.app[BUDGET].download(request):
        rows = _rows(request, filters, layer, "wkt")
        return await stream_csv(request, rows, exporting.filename("csv", layer), to_csv)


def _rows(
    request: web.Request, filters: Filters, layer: str, geometry: str
) -> AsyncIterator[dict[str, Any]]:
    """The rows of `layer` matching `filters`: the designs' reports for `area_estimate`, else
    the detections (their geometry encoded as `geometry`)."""
    if layer == exporting.ESTIMATE_LAYER:
        return _estimates(request, filters)
    db, thresholds = request.app[DOWNLOADS_DB], request.app[THRESHOLDS]
    return export_rows(db, filters, layer, geometry, thresholds)


async def _gdal_export(request: web.Request, fmt: str) -> web.StreamResponse:
    filters, layers = params.export_request(request.query, fmt)
    name = exporting.filename(fmt, None if len(layers) > 1 else layers[0])
    async with request.app[BUDGET].download(request):
        with tempfile.TemporaryDirectory(prefix="amberscan-export-") as folder:
            path = Path(folder) / name
            await write_file(
                path,
                fmt,
                layers,
                request.app[DOWNLOADS_DB],
                filters,
                request.app[THRESHOLDS],
                request.app[IMAGES],
            )
            return await stream_file(
                request, path, content_type=exporting.FORMATS[fmt][2], filename=name
            )


async def _estimates(request: web.Request, filters: Filters) -> AsyncIterator[dict[str, Any]]:
    """The `area_estimate` layer's rows: the designs' reports (`area_queries.export_reports`)."""
    found = await area_queries.export_reports(
        request.app[DOWNLOADS_DB], request.app[IMAGES], filters
    )
    for report in found:
        yield report


@routes.get("/api/export.gpkg")
async def export_gpkg(request: web.Request) -> web.StreamResponse:
    """Every layer (or the one `layer=` names) in one GeoPackage."""
    return await _gdal_export(request, "gpkg")


@routes.get("/api/export.fgb")
async def export_fgb(request: web.Request) -> web.StreamResponse:
    """One layer per FlatGeobuf file: `layer=tiles` (default), `damaged_areas` or
    `area_estimate`."""
    return await _gdal_export(request, "fgb")
