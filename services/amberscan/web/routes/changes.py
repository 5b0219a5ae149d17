"""Change between vintages or models as a list: the tiles whose verdict changed, GeoJSON or CSV
(streamed). The computation is `amberscan.common.changes`, which `amberscan diff` shares."""

from __future__ import annotations

from aiohttp import web

from amberscan.common import changes
from amberscan.web.core import BadRequest
from amberscan.web.responses import stream_csv, stream_geojson
from amberscan.web.state import BUDGET, DOWNLOADS_DB

routes = web.RouteTableDef()


def _comparison(request: web.Request) -> changes.Comparison:
    """`?from=2015&to=2016[&model=M]` or `?model=A&model=B[&year=Y]`."""
    query = request.query
    years = None
    if "from" in query or "to" in query:
        years = (query.get("from", "").strip(), query.get("to", "").strip())
    try:
        return changes.comparison(years, query.getall("model", []), query.get("year", "").strip())
    except changes.BadComparison as error:
        raise BadRequest(f"{error} (?from=YEAR&to=YEAR or ?model=A&model=B)") from None


@routes.get("/api/changes.geojson")
async def changes_geojson(request: web.Request) -> web.StreamResponse:
    spec = _comparison(request)
    async with request.app[BUDGET].download(request):
        rows = changes.diff(request.app[DOWNLOADS_DB], spec)
        return await stream_geojson(
            request, rows, "amberscan-changes.geojson", changes.feature, comparison=spec.describe()
        )


@routes.get("/api/changes.csv")
async def changes_csv(request: web.Request) -> web.StreamResponse:
    spec = _comparison(request)
    async with request.app[BUDGET].download(request):
        rows = changes.diff(request.app[DOWNLOADS_DB], spec)
        return await stream_csv(request, rows, "amberscan-changes.csv", changes.csv_lines)
