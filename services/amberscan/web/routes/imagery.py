"""The scanned imagery as raster map tiles (#27): `/tiles/imagery/{z}/{x}/{y}.png`, optionally
`?vintage=2016` (a year, month or date; `unknown` for undated imagery) and `?scan=<scan id>`.

The stored scan tiles a map tile needs are found in the detections (their `image_key`, by the
tile geometry's GiST index), chosen by `web.imagery.sources_for`, read through the app's blob
store client (bytes, kept by key: a stored tile is ~1.3 MB and read whole, so GDAL's `/vsis3/`
range reads would save nothing and would need the S3 settings handed to GDAL a second time) and
drawn by rio-tiler in a worker thread, at most two at once. The ETag names the images drawn,
so a map tile whose images did not change is answered 304 without reading or drawing.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from amberscan.common.blobstore import MissingBlob
from amberscan.geo.tiles import Tile
from amberscan.web import imagery, params
from amberscan.web.core import BadRequest
from amberscan.web.state import DB, STORED_IMAGES

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
# Candidates: the overlapping scan tiles and the ring that only touches the map tile's edges.
CANDIDATES = 4 * imagery.MAX_SOURCES + 8
_NEAR = """
SELECT DISTINCT ON (d.z, d.x, d.y) d.z, d.x, d.y, d.image_key, d.imagery_date
FROM detections d
WHERE d.tile_geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326) AND d.image_key <> ''{where}
ORDER BY d.z, d.x, d.y, d.imagery_date COLLATE "C" DESC, d.detected_at DESC
LIMIT %s"""


@routes.get("/tiles/imagery/{z}/{x}/{y}.png")
async def imagery_tile(request: web.Request) -> web.Response:
    z, x, y = params.tile_coords(request)
    map_tile = Tile(x, y, z)
    prefix = imagery.vintage_prefix(request.query.get("vintage", ""))
    scan = request.query.get("scan", "")
    if len(scan) > 200:
        raise BadRequest("scan: a scan id, at most 200 characters")
    where, args = "", []
    if prefix is None:
        where += " AND d.imagery_date = ''"
    elif prefix:
        where += " AND d.imagery_date LIKE %s"
        args.append(prefix + "%")
    if scan:
        where += " AND d.scan_id = %s"
        args.append(scan)
    rows = await request.app[DB].fetch(
        _NEAR.format(where=where), *map_tile.bounds(), *args, CANDIDATES
    )
    if len(rows) >= CANDIDATES:
        raise imagery.TooManySources(f"map tile {map_tile} covers too many scan tiles: zoom in")
    sources = imagery.sources_for(
        map_tile, (imagery.Source(key, Tile(tx, ty, tz), date) for tz, tx, ty, key, date in rows)
    )
    tag = imagery.etag(map_tile, sources)
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == tag:
        return web.Response(status=304, headers=headers)
    stored = request.app[STORED_IMAGES]
    found = await asyncio.gather(*(stored.get(s.key) for s in sources), return_exceptions=True)
    images = []
    for source, data in zip(sources, found, strict=True):
        if isinstance(data, MissingBlob):
            log.warning("imagery tile %s: %s", map_tile, data)  # drawn without it
        elif isinstance(data, BaseException):
            raise data
        else:
            images.append((source, data))
    if not images:
        return web.Response(body=imagery.blank(), content_type="image/png", headers=headers)
    async with stored.render_slot():
        body = await asyncio.to_thread(imagery.render, map_tile, images)
    return web.Response(body=body, content_type="image/png", headers=headers)
