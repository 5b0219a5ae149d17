"""The explore page: a 2-D projection of superpixel features, with crops for its tooltips."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from amberscan.common.blobstore import MissingBlob
from amberscan.common.data import SharedDataMissing
from amberscan.vision.imageio import decode_image, encode_png
from amberscan.web import explore, params
from amberscan.web.core import BadRequest
from amberscan.web.responses import json_response, page
from amberscan.web.state import DB, EXPLORE, EXPLORE_SLOT, IMAGES, SETTINGS

routes = web.RouteTableDef()


@routes.get("/explore")
async def explore_page(request: web.Request) -> web.StreamResponse:
    return page("explore.html")


@routes.get("/api/explore")
async def explore_data(request: web.Request) -> web.Response:
    """A 2-D projection of superpixel features: of a scan (`scan_id`, default the latest) read
    back from the features topic, or of the labelled crops (`source=labelled`); at most
    `points` (default and cap AMBERSCAN_EXPLORE_MAX_POINTS), one projection at a time."""
    source, scan_id = params.explore_source(request.query)
    settings = request.app[SETTINGS]
    cap = settings.explore.max_points
    points = params.int_param(request.query, "points", cap, 1, 10**9)
    if points > cap:
        raise BadRequest(f"points={points}: at most {cap} (AMBERSCAN_EXPLORE_MAX_POINTS)")
    slot = request.app[EXPLORE_SLOT]
    if slot.locked():
        raise web.HTTPTooManyRequests(
            text="another projection is running (one at a time: t-SNE takes the CPU); retry soon"
        )
    async with slot:
        if source == "labelled":
            try:
                document = await explore.labelled_projection(settings, request.app[EXPLORE], points)
            except (FileNotFoundError, SharedDataMissing) as error:
                raise web.HTTPNotFound(text=str(error)) from None
        else:
            document = await explore.scan_projection(settings, request.app[DB], scan_id, points)
    return json_response(document)


@routes.get("/api/explore/crop")
async def explore_crop(request: web.Request) -> web.Response:
    """PNG of one superpixel's box of a stored tile image (`image_key`, `bbox=r0,c0,r1,c1`)."""
    image_key = params.image_key(request.query.get("image_key", ""))
    box = params.pixel_box(request.query.get("bbox", ""))
    try:
        image = await request.app[IMAGES].image(image_key)
    except MissingBlob:
        raise web.HTTPNotFound(text=f"no tile image {image_key}") from None
    params.check_box_inside(box, int(image.shape[0]), int(image.shape[1]))
    data = await asyncio.to_thread(explore.crop_png, image, box)
    return web.Response(
        body=data, content_type="image/png", headers={"Cache-Control": "max-age=3600"}
    )


@routes.get("/api/explore/labelled/{index}.png")
async def explore_labelled_png(request: web.Request) -> web.Response:
    """The labelled crop at `index` of the explore page's labelled source."""
    text = request.match_info["index"]
    if not re.fullmatch(r"[0-9]{1,6}", text):
        raise BadRequest(f"labelled crop index {text[:20]!r}: an integer")
    try:
        crops = await request.app[EXPLORE].crops(request.app[SETTINGS])
    except (FileNotFoundError, SharedDataMissing) as error:
        raise web.HTTPNotFound(text=str(error)) from None
    index = int(text)
    if index >= len(crops):
        raise web.HTTPNotFound(text=f"labelled crop {index}: there are {len(crops)}")
    data = await asyncio.to_thread(
        lambda: encode_png(decode_image(crops[index].path.read_bytes(), crops[index].path.name))
    )
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-cache"})
