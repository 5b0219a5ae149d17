"""The web map and review loop: one aiohttp app over PostGIS and the blob store.

Pages (static HTML + JS that renders data with textContent only): `/` map, `/tile/{id}` tile
debugger, `/label/{id}` labelling, `/explore` projection. JSON/GeoJSON/CSV/PNG under `/api/`.
Reads are open; every write needs `Authorization: Bearer <AMBERSCAN_WEB_TOKEN>`.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiohttp import web
from numpy.typing import NDArray

from amberscan.common.blobstore import BlobStore, MissingBlob
from amberscan.common.db import Database
from amberscan.common.errors import AmberscanError
from amberscan.common.settings import Settings
from amberscan.vision.imageio import decode_image, encode_png
from amberscan.vision.labels import decode_labels
from amberscan.vision.overlay import score_overlay
from amberscan.vision.segment import Segmentation, boundaries
from amberscan.web import core, explore, queries
from amberscan.web.core import BadRequest

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DEFAULT_TILES_URL = "http://127.0.0.1:18080/tiles/{z}/{x}/{y}.png"
_TILE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DATE = re.compile(r"^[0-9A-Za-z:._+-]{0,40}$")
MAX_AUDIT = 10_000
MAX_BODY = 64 * 1024

DB: web.AppKey[Database] = web.AppKey("db", Database)
STORE: web.AppKey[BlobStore] = web.AppKey("store", BlobStore)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
CACHE: web.AppKey[TileCache] = web.AppKey("cache")
CSP: web.AppKey[str] = web.AppKey("csp", str)
THRESHOLDS: web.AppKey[dict[str, float]] = web.AppKey("thresholds", dict)
EXPLORE: web.AppKey[explore.LabelledFeatures] = web.AppKey("explore", explore.LabelledFeatures)
EXPLORE_IMAGES: web.AppKey[explore.TileImages] = web.AppKey("explore_images", explore.TileImages)


@dataclass(frozen=True)
class TileImage:
    image: NDArray[np.uint8]
    segmentation: Segmentation
    edges: NDArray[np.bool_]


class TileCache:
    """The last few decoded tiles: a reviewer clicks around one tile many times."""

    def __init__(self, store: BlobStore, size: int = 8) -> None:
        self.store = store
        self.size = size
        self.entries: OrderedDict[tuple[str, str], TileImage] = OrderedDict()

    async def get(self, image_key: str, labels_key: str) -> TileImage:
        key = (image_key, labels_key)
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        if not image_key or not labels_key:
            raise web.HTTPNotFound(text="this detection has no stored tile image or label image")
        try:
            image_bytes, label_bytes = await asyncio.gather(
                self.store.get(image_key), self.store.get(labels_key)
            )
        except MissingBlob as error:
            raise web.HTTPNotFound(text=str(error)) from None

        def decode() -> TileImage:
            image = decode_image(image_bytes, image_key)
            segmentation = Segmentation.from_labels(decode_labels(label_bytes))
            if segmentation.labels.shape != image.shape[:2]:
                raise AmberscanError(
                    f"label image {labels_key} is {segmentation.labels.shape}, "
                    f"tile image {image_key} is {image.shape[:2]}"
                )
            return TileImage(image, segmentation, boundaries(segmentation))

        tile = await asyncio.to_thread(decode)
        self.entries[key] = tile
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return tile


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


# ---------------------------------------------------------------- middleware


def _csp(settings: Settings) -> str:
    tiles = urlsplit(getattr(settings, "map_tiles_url", DEFAULT_TILES_URL))
    tile_origin = f"{tiles.scheme}://{tiles.netloc}" if tiles.scheme and tiles.netloc else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: {tile_origin}; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


def _token_ok(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Writes need the bearer token; errors become JSON with a message; safe headers."""
    settings = request.app[SETTINGS]
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        token = getattr(settings, "web_token", "") or ""
        if not token:
            return _error(
                403, "writes are disabled on this server: set AMBERSCAN_WEB_TOKEN to enable them"
            )
        if not _token_ok(request, token):
            return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
    try:
        response = await handler(request)
    except BadRequest as error:
        response = _error(400, str(error))
    except web.HTTPException as error:
        if error.status >= 400 and request.path.startswith("/api/"):
            response = _error(error.status, error.text or error.reason)
        elif error.status >= 400:
            response = web.Response(
                status=error.status,
                content_type="text/html",
                text=f"<!doctype html><title>{error.status}</title>"
                f"<p>{html.escape(error.text or error.reason)}</p><p><a href='/'>map</a></p>",
            )
        else:
            raise
    except AmberscanError as error:
        log.warning("%s %s: %s", request.method, request.path, error)
        response = _error(500, str(error))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", request.app[CSP])
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


# ---------------------------------------------------------------- helpers


def _tile_id(request: web.Request) -> str:
    tile_id = request.match_info["tile_id"]
    if not _TILE_ID.match(tile_id):
        raise BadRequest(f"tile id {tile_id!r}: letters, digits, '.', '_' or '-' only")
    return tile_id


def _date_model(query: Any) -> tuple[str | None, str | None]:
    date = query.get("imagery_date")
    model = query.get("model") or None
    if date is not None and not _DATE.match(date):
        raise BadRequest(f"imagery_date={date!r}: not a date")
    if model is not None and not re.match(r"^[A-Za-z0-9._:+-]{1,128}$", model):
        raise BadRequest(f"model={model!r}: not a model version")
    return date, model


async def _detection(request: web.Request, tile_id: str) -> dict[str, Any]:
    date, model = _date_model(request.query)
    row = await queries.detection(request.app[DB], tile_id, date, model)
    if row is None:
        raise web.HTTPNotFound(text=f"no detection of tile {tile_id}")
    return row


def _scores_for(row: dict[str, Any], n: int) -> NDArray[np.float64]:
    scores = np.zeros(n)
    given = np.asarray(row["scores"] or [], dtype=np.float64)[:n]
    scores[: given.size] = given
    return scores


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, pattern: re.Pattern[str] | str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not re.match(pattern, value):
        raise BadRequest(f"{name}: missing or malformed")
    return value


# ---------------------------------------------------------------- pages


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if "tile_id" in request.match_info:
            _tile_id(request)
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    return handler


async def config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return _json(
        {
            "tiles_url": getattr(settings, "map_tiles_url", DEFAULT_TILES_URL),
            "writes_enabled": bool(getattr(settings, "web_token", "")),
        }
    )


# ---------------------------------------------------------------- map API


async def detections(request: web.Request) -> web.Response:
    filters = core.parse_filters(request.query, bbox_required=True)
    rows = await queries.detections(request.app[DB], filters)
    matched = int(rows[0]["matched"]) if rows else 0
    if not rows and filters.offset:
        matched = await queries.count_detections(request.app[DB], filters)
    collection = core.feature_collection(rows, matched=matched, offset=filters.offset)
    return _json(collection)


async def summary(request: web.Request) -> web.Response:
    filters = core.parse_filters(request.query, bbox_required=False)
    return _json(await queries.summary(request.app[DB], filters))


async def export_geojson(request: web.Request) -> web.Response:
    filters = core.parse_filters(request.query, bbox_required=False)
    rows = await queries.detections(request.app[DB], filters, page=False)
    return web.Response(
        text=json.dumps(core.feature_collection(rows)),
        content_type="application/geo+json",
        headers={"Content-Disposition": 'attachment; filename="amberscan-detections.geojson"'},
    )


async def export_csv(request: web.Request) -> web.Response:
    filters = core.parse_filters(request.query, bbox_required=False)
    rows = await queries.detections(request.app[DB], filters, page=False)
    return web.Response(
        text=core.csv_text(rows),
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="amberscan-detections.csv"'},
    )


# ---------------------------------------------------------------- tile API


async def _threshold(request: web.Request, row: dict[str, Any]) -> tuple[float, str]:
    """The classifier's threshold, from its registry entry; inferred from the scores when the
    registry no longer has that version."""
    version = str(row["model_version"])
    known = request.app[THRESHOLDS]
    if version not in known:
        from amberscan.common.registry import load_version

        try:
            known[version] = (await load_version(request.app[SETTINGS], version)).threshold
        except Exception:  # noqa: BLE001 - a missing or unreadable entry: fall back below
            return core.implied_threshold(row["scores"] or [], int(row["positives"])), "implied"
    return known[version], "registry"


async def tile_detail(request: web.Request) -> web.Response:
    tile_id = _tile_id(request)
    row = await _detection(request, tile_id)
    feature = core.feature_of(row)
    marks = await queries.labels_of(request.app[DB], row["labels_key"]) if row["labels_key"] else {}
    threshold, threshold_source = await _threshold(request, row)
    superpixels: list[dict[str, Any]] = []
    size: list[int] | None = None
    problem = ""
    try:
        tile = await request.app[CACHE].get(row["image_key"], row["labels_key"])
        size = [int(tile.image.shape[1]), int(tile.image.shape[0])]
        scores = _scores_for(row, len(tile.segmentation.superpixels))
        for sp in tile.segmentation.superpixels:
            score = float(scores[sp.index])
            superpixels.append(
                {
                    "index": sp.index,
                    "score": round(score, 4),
                    "positive": score >= threshold,
                    "area_px": sp.area_px,
                    "bbox": list(sp.bbox),
                    "label": {1: "mining", 0: "not_mining"}.get(marks.get(sp.index, -1), ""),
                }
            )
    except web.HTTPNotFound as error:
        problem = error.text or "tile image unavailable"
    props = feature["properties"]
    verdict = "FLAGGED" if props["flagged"] else "not flagged"
    return _json(
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


async def overlay_png(request: web.Request) -> web.Response:
    tile_id = _tile_id(request)
    row = await _detection(request, tile_id)
    view = request.query.get("view", "scores")
    if view not in ("scores", "labels", "image"):
        raise BadRequest("view must be scores, labels or image")
    size = core._int_param(request.query, "size", 0, 16, 2048) if "size" in request.query else 0
    tile = await request.app[CACHE].get(row["image_key"], row["labels_key"])
    marks = await queries.labels_of(request.app[DB], row["labels_key"]) if view == "labels" else {}
    threshold, _ = await _threshold(request, row)

    def render() -> bytes:
        if view == "scores":
            scores = _scores_for(row, len(tile.segmentation.superpixels))
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


async def _segment_at(request: web.Request, row: dict[str, Any], source: Any) -> int:
    """The superpixel index named by `segment`, or found under pixel (`row`, `col`)."""
    tile = await request.app[CACHE].get(row["image_key"], row["labels_key"])
    n = len(tile.segmentation.superpixels)
    if source.get("segment") not in (None, ""):
        try:
            index = int(source["segment"])
        except (TypeError, ValueError):
            raise BadRequest("segment: expected an integer") from None
    else:
        height, width = tile.segmentation.labels.shape
        try:
            r, c = int(source["row"]), int(source["col"])
        except (KeyError, TypeError, ValueError):
            raise BadRequest("give segment, or row and col (pixel position in the tile)") from None
        if not (0 <= r < height and 0 <= c < width):
            raise BadRequest(f"pixel ({r}, {c}) outside the {height}x{width} tile")
        index = int(tile.segmentation.labels[r, c])
    if not 0 <= index < n:
        raise BadRequest(f"segment {index}: the tile has {n} superpixels")
    return index


async def segment_lookup(request: web.Request) -> web.Response:
    tile_id = _tile_id(request)
    row = await _detection(request, tile_id)
    index = await _segment_at(request, row, request.query)
    scores = row["scores"] or []
    marks = await queries.labels_of(request.app[DB], row["labels_key"])
    return _json(
        {
            "segment": index,
            "score": round(float(scores[index]), 4) if index < len(scores) else None,
            "label": {1: "mining", 0: "not_mining"}.get(marks.get(index, -1), ""),
        }
    )


# ---------------------------------------------------------------- writes


async def _target(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    tile_id = _text(body, "tile_id", _TILE_ID)
    date = body.get("imagery_date", "")
    model = body.get("model_version", "")
    if not isinstance(date, str) or not _DATE.match(date):
        raise BadRequest("imagery_date: malformed")
    if not isinstance(model, str) or not re.match(r"^[A-Za-z0-9._:+-]{0,128}$", model):
        raise BadRequest("model_version: malformed")
    row = await queries.detection(request.app[DB], tile_id, date, model or None)
    if row is None:
        raise web.HTTPNotFound(text=f"no detection of tile {tile_id} dated {date!r}")
    return row


async def post_review(request: web.Request) -> web.Response:
    body = await _body(request)
    row = await _target(request, body)
    reviewer = core.parse_reviewer(body.get("reviewer"))
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > 2000:
        raise BadRequest("note: text of at most 2000 characters")
    key = (row["tile_id"], row["imagery_date"], row["model_version"])
    if body.get("verdict") == "clear":
        await queries.delete_review(request.app[DB], *key)
        return _json({"review": "unreviewed"})
    verdict = core.parse_verdict(body.get("verdict"))
    saved = await queries.save_review(request.app[DB], *key, verdict, reviewer, note)
    return _json(
        {
            "review": saved["verdict"],
            "reviewer": saved["reviewer"],
            "reviewed_at": saved["reviewed_at"],
        }
    )


async def post_label(request: web.Request) -> web.Response:
    body = await _body(request)
    row = await _target(request, body)
    label = core.parse_label(body.get("label"))
    reviewer = core.parse_reviewer(body.get("reviewer"))
    index = await _segment_at(request, row, body)
    await queries.save_label(request.app[DB], row, index, label, reviewer)
    return _json({"segment": index, "label": body.get("label"), "reviewer": reviewer})


async def post_audit(request: web.Request) -> web.Response:
    body = await _body(request)
    n = body.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_AUDIT:
        raise BadRequest(f"n: an integer from 1 to {MAX_AUDIT}")
    filters = core.parse_filters(
        {k: str(body[k]) for k in ("year", "model", "bbox") if body.get(k)}, bbox_required=False
    )
    reviewer = core.parse_reviewer(body.get("reviewer"))
    audit_id = await queries.create_audit(request.app[DB], n, filters, reviewer)
    return _json(await _audit_report(request, audit_id), status=201)


async def get_audit(request: web.Request) -> web.Response:
    try:
        audit_id = int(request.match_info["audit_id"])
    except ValueError:
        raise BadRequest("audit id: an integer") from None
    return _json(await _audit_report(request, audit_id))


async def _audit_report(request: web.Request, audit_id: int) -> dict[str, Any]:
    audit = await queries.audit(request.app[DB], audit_id)
    if audit is None:
        raise web.HTTPNotFound(text=f"no audit {audit_id}")
    tiles = audit["tiles"]
    confirmed = sum(1 for t in tiles if t["verdict"] == "confirmed")
    rejected = sum(1 for t in tiles if t["verdict"] == "rejected")
    interval = core.wilson_interval(confirmed, confirmed + rejected)
    return {
        "id": audit["audit_id"],
        "requested": audit["requested"],
        "sampled": len(tiles),
        "reviewed": confirmed + rejected,
        "confirmed": confirmed,
        "rejected": rejected,
        "complete": confirmed + rejected == len(tiles),
        "precision": interval.estimate,
        "ci95": None if interval.low is None else [interval.low, interval.high],
        "created_by": audit["created_by"],
        "created_at": audit["created_at"],
        "tiles": [
            {
                "tile_id": t["tile_id"],
                "imagery_date": t["imagery_date"],
                "model_version": t["model_version"],
                "review": core.review_state(t["verdict"]),
            }
            for t in tiles
        ],
    }


# ---------------------------------------------------------------- explore


async def explore_data(request: web.Request) -> web.Response:
    """A 2-D projection of superpixel features: of a scan (`scan_id`, default the latest) read
    back from the features topic, or of the labelled crops (`source=labelled`)."""
    source, scan_id = explore.query_source(request.query)
    settings = request.app[SETTINGS]
    if source == "labelled":
        return _json(await explore.labelled_projection(settings, request.app[EXPLORE]))
    return _json(await explore.scan_projection(settings, request.app[DB], scan_id))


async def explore_crop(request: web.Request) -> web.Response:
    """PNG of one superpixel's box of a stored tile image (`image_key`, `bbox=r0,c0,r1,c1`)."""
    image_key = explore.parse_image_key(request.query.get("image_key", ""))
    box = explore.parse_pixel_box(request.query.get("bbox", ""))
    try:
        image = await request.app[EXPLORE_IMAGES].get(request.app[STORE], image_key)
    except MissingBlob:
        raise web.HTTPNotFound(text=f"no tile image {image_key}") from None
    data = await asyncio.to_thread(explore.crop_png, image, box)
    return web.Response(
        body=data, content_type="image/png", headers={"Cache-Control": "max-age=3600"}
    )


async def explore_labelled_png(request: web.Request) -> web.Response:
    """The labelled crop at `index` of the explore page's labelled source."""
    text = request.match_info["index"]
    if not re.fullmatch(r"\d{1,6}", text):
        raise BadRequest(f"labelled crop index {text[:20]!r}: an integer")
    crops = await request.app[EXPLORE].crops(request.app[SETTINGS])
    index = int(text)
    if index >= len(crops):
        raise web.HTTPNotFound(text=f"labelled crop {index}: there are {len(crops)}")
    data = await asyncio.to_thread(
        lambda: encode_png(decode_image(crops[index].path.read_bytes(), crops[index].path.name))
    )
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------- app


def make_app(settings: Settings) -> web.Application:
    """The web application; it opens its database pool on startup and closes it on cleanup."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[CSP] = _csp(settings)
    app[THRESHOLDS] = {}
    app[EXPLORE] = explore.LabelledFeatures()
    app[EXPLORE_IMAGES] = explore.TileImages()

    async def resources(app: web.Application) -> Any:
        db = Database(settings)
        await db.open()
        store = BlobStore(settings)
        app[DB] = db
        app[STORE] = store
        app[CACHE] = TileCache(store)
        yield
        await db.close()

    app.cleanup_ctx.append(resources)
    r = app.router
    r.add_get("/", _page("map.html"))
    r.add_get("/explore", _page("explore.html"))
    r.add_get("/tile/{tile_id}", _page("tile.html"))
    r.add_get("/label/{tile_id}", _page("tile.html"))  # tile.js reads the mode from the path
    r.add_get("/api/config", config)
    r.add_get("/api/detections", detections)
    r.add_get("/api/summary", summary)
    r.add_get("/api/export.geojson", export_geojson)
    r.add_get("/api/export.csv", export_csv)
    r.add_get("/api/explore", explore_data)
    r.add_get("/api/explore/crop", explore_crop)
    r.add_get("/api/explore/labelled/{index}.png", explore_labelled_png)
    r.add_get("/api/tiles/{tile_id}", tile_detail)
    r.add_get("/api/tiles/{tile_id}/overlay.png", overlay_png)
    r.add_get("/api/tiles/{tile_id}/segment", segment_lookup)
    r.add_post("/api/reviews", post_review)
    r.add_post("/api/labels", post_label)
    r.add_post("/api/audits", post_audit)
    r.add_get("/api/audits/{audit_id}", get_audit)
    r.add_static("/static/", STATIC, follow_symlinks=False)
    return app


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the web app on settings.web_host:web_port until `stop` is set."""
    runner = web.AppRunner(make_app(settings), access_log=log)
    await runner.setup()
    site = web.TCPSite(runner, settings.web_host, settings.web_port)
    await site.start()
    log.info("web map on http://%s:%s/", settings.web_host, settings.web_port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
