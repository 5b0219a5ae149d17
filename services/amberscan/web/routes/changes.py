"""Change between vintages or models as a list: the tiles whose verdict changed, GeoJSON or CSV
(streamed). The computation is `amberscan.changes`, which `amberscan diff` shares."""

from __future__ import annotations

import json

from aiohttp import web

from amberscan import changes
from amberscan.web.core import BadRequest
from amberscan.web.responses import FEATURES_HEAD, FEATURES_TAIL, features_chunk, stream_rows
from amberscan.web.state import DB

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
    return await stream_rows(
        request,
        changes.diff(request.app[DB], spec),
        content_type="application/geo+json",
        filename="amberscan-changes.geojson",
        head=FEATURES_HEAD.replace(
            '"features"', f'"comparison":{json.dumps(spec.describe())},"features"'
        ),
        chunk=features_chunk(changes.feature),
        tail=FEATURES_TAIL,
    )


@routes.get("/api/changes.csv")
async def changes_csv(request: web.Request) -> web.StreamResponse:
    spec = _comparison(request)
    return await stream_rows(
        request,
        changes.diff(request.app[DB], spec),
        content_type="text/csv",
        filename="amberscan-changes.csv",
        head=changes.csv_lines([]),
        chunk=lambda rows, _: changes.csv_lines(rows, header=False),
    )
