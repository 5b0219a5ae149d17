"""The tile debugger and the labelling page, with their API: a detection's superpixels, the
overlay images, the superpixel under a pixel, and people's labels (behind the token)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from aiohttp import web

from amberscan.vision.imageio import encode_png
from amberscan.vision.overlay import score_overlay
from amberscan.web import core, params, review_queries
from amberscan.web.core import LABEL_NAMES, BadRequest
from amberscan.web.responses import json_response, page
from amberscan.web.state import DB, IMAGES, THRESHOLDS, scores_for

routes = web.RouteTableDef()


@routes.get("/tile/{tile_id}")
@routes.get("/label/{tile_id}")  # tile.js reads the mode from the path
async def tile_page(request: web.Request) -> web.StreamResponse:
    params.tile_id(request)
    return page("tile.html")


@routes.get("/api/tiles/{tile_id}")
async def tile_detail(request: web.Request) -> web.Response:
    row = await params.detection(request, params.tile_id(request))
    feature = core.feature_of(row)
    marks = (
        await review_queries.labels_of(request.app[DB], row["labels_key"])
        if row["labels_key"]
        else {}
    )
    threshold, threshold_source = await request.app[THRESHOLDS].of(row)
    superpixels: list[dict[str, Any]] = []
    size: list[int] | None = None
    problem = ""
    try:
        tile = await request.app[IMAGES].tile(row["image_key"], row["labels_key"])
        size = [int(tile.image.shape[1]), int(tile.image.shape[0])]
        scores = scores_for(row, len(tile.segmentation.superpixels))
        for sp in tile.segmentation.superpixels:
            score = float(scores[sp.index])
            superpixels.append(
                {
                    "index": sp.index,
                    "score": round(score, 4),
                    "positive": score >= threshold,
                    "area_px": sp.area_px,
                    "bbox": list(sp.bbox),
                    "label": LABEL_NAMES.get(marks.get(sp.index, -1), ""),
                }
            )
    except web.HTTPNotFound as error:
        problem = error.text or "tile image unavailable"
    props = feature["properties"]
    verdict = "FLAGGED" if props["flagged"] else "not flagged"
    return json_response(
        {
            **props,
            "geometry": feature["geometry"],
            "threshold": round(threshold, 4),
            "threshold_source": threshold_source,
            "rule": f"{verdict}: {props['positives']} of {props['segment_count']} superpixels "
            f"positive (rule: flagged when more than {props['min_positives']})",
            "superpixels": superpixels,
            "size": size,
            "problem": problem,
        }
    )


@routes.get("/api/tiles/{tile_id}/overlay.png")
async def overlay_png(request: web.Request) -> web.Response:
    row = await params.detection(request, params.tile_id(request))
    view = request.query.get("view", "scores")
    if view not in ("scores", "labels", "image"):
        raise BadRequest("view must be scores, labels or image")
    size = params.int_param(request.query, "size", 0, 16, 2048) if "size" in request.query else 0
    tile = await request.app[IMAGES].tile(row["image_key"], row["labels_key"])
    marks = (
        await review_queries.labels_of(request.app[DB], row["labels_key"])
        if view == "labels"
        else {}
    )
    threshold, _ = await request.app[THRESHOLDS].of(row)

    def render() -> bytes:
        if view == "scores":
            scores = scores_for(row, len(tile.segmentation.superpixels))
            picture = score_overlay(tile.image, tile.segmentation, scores, threshold)
        elif view == "labels":
            picture = core.label_overlay(tile.image, tile.segmentation.labels, tile.edges, marks)
        else:
            picture = tile.image
        if size:
            from PIL import Image

            small = Image.fromarray(picture)
            small.thumbnail((size, size))
            picture = np.asarray(small)
        return encode_png(picture)

    data = await asyncio.to_thread(render)
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-store"})


async def segment_at(request: web.Request, row: dict[str, Any], source: Any) -> int:
    """The superpixel index named by `segment`, or found under pixel (`row`, `col`)."""
    tile = await request.app[IMAGES].tile(row["image_key"], row["labels_key"])
    n = len(tile.segmentation.superpixels)
    given = params.segment_or_pixel(source)
    if isinstance(given, int):
        index = given
    else:
        r, c = given
        height, width = tile.segmentation.labels.shape
        if not (0 <= r < height and 0 <= c < width):
            raise BadRequest(f"pixel ({r}, {c}) outside the {height}x{width} tile")
        index = int(tile.segmentation.labels[r, c])
    if not 0 <= index < n:
        raise BadRequest(f"segment {index}: the tile has {n} superpixels")
    return index


@routes.get("/api/tiles/{tile_id}/segment")
async def segment_lookup(request: web.Request) -> web.Response:
    row = await params.detection(request, params.tile_id(request))
    index = await segment_at(request, row, request.query)
    scores = row["scores"] or []
    marks = await review_queries.labels_of(request.app[DB], row["labels_key"])
    return json_response(
        {
            "segment": index,
            "score": round(float(scores[index]), 4) if index < len(scores) else None,
            "label": LABEL_NAMES.get(marks.get(index, -1), ""),
        }
    )


@routes.post("/api/labels")
async def post_label(request: web.Request) -> web.Response:
    data = await params.body(request)
    row = await params.target(request, data)
    label = params.label(data.get("label"))
    reviewer = params.reviewer(data.get("reviewer"))
    index = await segment_at(request, row, data)
    await review_queries.save_label(request.app[DB], row, index, label, reviewer)
    return json_response({"segment": index, "label": data.get("label"), "reviewer": reviewer})
