"""Every request parser of the web app, and the resolvers that turn a parameter into a row or a 404.

Parsers take the query mapping or a JSON body and return typed values, raising `BadRequest`
(answered 400 by the middleware) with a message naming the parameter. Resolvers look the value
up in PostGIS and raise `web.HTTPNotFound` when nothing matches.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from amberscan.common.changes import CHANGE_FILTERS
from amberscan.web import queries
from amberscan.web.core import (
    DEFAULT_PAGE,
    LABELS,
    MAX_PAGE,
    REVIEW_STATES,
    VERDICTS,
    BadRequest,
    Filters,
)
from amberscan.web.state import DB

MAX_BODY = 64 * 1024
TILE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DATE = re.compile(r"^[0-9A-Za-z:._+-]{0,40}$")
_YEAR = re.compile(r"^\d{4}$")
_MODEL = re.compile(r"^[A-Za-z0-9._:+-]{1,128}$")
_REVIEWER = re.compile(r"^[\w .@-]{1,64}$")
_IMAGE_KEY = re.compile(r"^tiles/([0-9a-f]{2})/([0-9a-f]{64})\.(png|jpg|jpeg|webp|tif|tiff)$")
_SCAN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


# ---------------------------------------------------------------- query strings


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """A "W,S,E,N" query parameter in WGS84 degrees.

    Raises:
        BadRequest: not four finite numbers, or west >= east, south >= north, out of range.
    """
    parts = text.split(",")
    if len(parts) != 4:
        raise BadRequest(f"bbox={text!r}: expected four numbers W,S,E,N, got {len(parts)} values")
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise BadRequest(f"bbox={text!r}: expected four numbers W,S,E,N") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise BadRequest(f"bbox={text!r}: values must be finite")
    # Maps report longitudes past ±180 when the world wraps; clamp those instead of refusing.
    west, east = max(west, -180.0), min(east, 180.0)
    south, north = max(south, -90.0), min(north, 90.0)
    if not west < east:
        raise BadRequest(f"bbox={text!r}: west must be less than east")
    if not south < north:
        raise BadRequest(f"bbox={text!r}: south must be less than north")
    return (west, south, east, north)


def parse_filters(
    query: Mapping[str, str], *, bbox_required: bool, max_page: int = MAX_PAGE
) -> Filters:
    """Filters from a request's query string (bbox, year, model, review, change, limit, offset).

    Raises:
        BadRequest: naming the parameter that is missing or malformed.
    """
    bbox_text = query.get("bbox", "").strip()
    if not bbox_text and bbox_required:
        raise BadRequest("bbox is required: ?bbox=W,S,E,N in WGS84 degrees")
    bbox = parse_bbox(bbox_text) if bbox_text else None
    year = query.get("year", "").strip()
    if year and year != "unknown" and not _YEAR.match(year):
        raise BadRequest(f"year={year!r}: expected four digits or 'unknown'")
    model = query.get("model", "").strip()
    if model and not _MODEL.match(model):
        raise BadRequest(f"model={model!r}: not a model version")
    review = query.get("review", "").strip()
    if review and review not in REVIEW_STATES:
        raise BadRequest(f"review={review[:20]!r}: one of {', '.join(REVIEW_STATES)}")
    change = query.get("change", "").strip()
    if change and change not in CHANGE_FILTERS:
        raise BadRequest(f"change={change[:20]!r}: one of {', '.join(CHANGE_FILTERS)}")
    if change and not _YEAR.match(year):
        raise BadRequest(
            f"change={change} needs year=YYYY: the vintage compared with each tile's previous one"
        )
    limit = int_param(query, "limit", DEFAULT_PAGE, 1, 10**9)
    if limit > max_page:
        raise BadRequest(
            f"limit={limit}: at most {max_page} per page (AMBERSCAN_WEB_MAX_PAGE); page on with offset"
        )
    offset = int_param(query, "offset", 0, 0, 10**9)
    return Filters(bbox, year, model, review, change, limit, offset)


# A region filter is a query parameter: a simple polygon, not a country's coastline.
MAX_REGION_POINTS = 2000


def region(text: str) -> str:
    """A GeoJSON Polygon or MultiPolygon (or a Feature / FeatureCollection of them) in WGS84,
    as the WKT the queries take.

    Raises:
        BadRequest: not such a geometry, invalid, or over MAX_REGION_POINTS points.
    """
    import shapely

    from amberscan.errors import InvalidRegion
    from amberscan.geo.tiles import parse_geojson

    try:
        shape = parse_geojson(text)
    except InvalidRegion as error:
        raise BadRequest(f"region: {error}") from None
    points = int(shapely.get_num_coordinates(shape))
    if points > MAX_REGION_POINTS:
        raise BadRequest(
            f"region: {points} points, at most {MAX_REGION_POINTS}; simplify it or use bbox"
        )
    return str(shape.wkt)


def export_request(query: Mapping[str, str], fmt: str) -> tuple[Filters, tuple[str, ...]]:
    """The filters and layers of an export (`/api/export.*`, `amberscan export`): the map's
    filters (bbox, year, model, review, change), `flagged` (true: flagged tiles only), `region`
    (a GeoJSON polygon) and `layer` (tiles or damaged_areas; a GeoPackage holds both unless
    one is named, the other formats one, tiles by default).

    Raises:
        BadRequest: naming the parameter that is malformed.
    """
    from amberscan.web.exporting import LAYERS, MULTI_LAYER

    filters = parse_filters(query, bbox_required=False)
    flagged = query.get("flagged", "").strip().lower()
    if flagged not in ("", "true", "false", "1", "0"):
        raise BadRequest(f"flagged={flagged[:20]!r}: true or false")
    region_text = query.get("region", "").strip()
    layer = query.get("layer", "").strip()
    if layer and layer not in LAYERS:
        raise BadRequest(f"layer={layer[:20]!r}: one of {', '.join(LAYERS)}")
    layers = (layer,) if layer else LAYERS if fmt in MULTI_LAYER else LAYERS[:1]
    filters = dataclasses.replace(
        filters,
        flagged=flagged in ("true", "1"),
        region=region(region_text) if region_text else "",
    )
    return filters, layers


def int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; `default` when absent."""
    text = query.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r}: expected an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={value}: must be between {low} and {high}")
    return value


def tile_id(request: web.Request) -> str:
    """The `{tile_id}` of the path."""
    text = request.match_info["tile_id"]
    if not TILE_ID.match(text):
        raise BadRequest(f"tile id {text!r}: letters, digits, '.', '_' or '-' only")
    return text


def date_model(query: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(`imagery_date`, `model`) of a query; None for each one absent."""
    date = query.get("imagery_date")
    model = query.get("model") or None
    if date is not None and not _DATE.match(date):
        raise BadRequest(f"imagery_date={date!r}: not a date")
    if model is not None and not _MODEL.match(model):
        raise BadRequest(f"model={model!r}: not a model version")
    return date, model


def image_key(text: str) -> str:
    """A tile image's content key (`tiles/ab/abcdef….tif`; `.png` as tiles were stored before);
    nothing else may be read.

    Raises:
        BadRequest: any other text.
    """
    match = _IMAGE_KEY.match(text)
    if match is None or not match.group(2).startswith(match.group(1)):
        raise BadRequest(f"image_key={text[:80]!r}: not a tile image key (tiles/ab/<sha256>.tif)")
    return text


def pixel_box(text: str) -> tuple[int, int, int, int]:
    """`r0,c0,r1,c1` (half-open rows and columns) as four integers with r0 < r1, c0 < c1.

    Raises:
        BadRequest: not four non-negative integers, or an empty box.
    """
    parts = text.split(",")
    if len(parts) != 4 or not all(re.fullmatch(r"\d{1,5}", p.strip()) for p in parts):
        raise BadRequest(f"bbox={text[:40]!r}: expected four non-negative integers r0,c0,r1,c1")
    r0, c0, r1, c1 = (int(p) for p in parts)
    if not (r0 < r1 and c0 < c1):
        raise BadRequest(f"bbox={text!r}: empty box (need r0 < r1 and c0 < c1)")
    return r0, c0, r1, c1


def check_box_inside(box: tuple[int, int, int, int], height: int, width: int) -> None:
    """Raises BadRequest when `box` reaches outside a height x width image."""
    r0, c0, r1, c1 = box
    if r1 > height or c1 > width:
        raise BadRequest(f"bbox {r0},{c0},{r1},{c1} reaches outside the {height}x{width} image")


def scan_id(text: str) -> str:
    if not _SCAN_ID.match(text):
        raise BadRequest(f"scan_id={text[:80]!r}: letters, digits and . _ : - only")
    return text


def explore_source(query: Mapping[str, str]) -> tuple[str, str | None]:
    """("scan", scan_id or None) or ("labelled", None) from a request's query string."""
    source = query.get("source", "scan").strip() or "scan"
    if source not in ("scan", "labelled"):
        raise BadRequest(f"source={source[:20]!r}: scan or labelled")
    text = query.get("scan_id", "").strip()
    if source == "labelled":
        return source, None
    return source, scan_id(text) if text else None


# ---------------------------------------------------------------- JSON bodies


async def body(request: web.Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The request's JSON object body (at most `limit` bytes)."""
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(f"request body over {limit} bytes")
    raw = await request.read()
    if len(raw) > limit:
        raise BadRequest(f"request body over {limit} bytes")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def text(data: Mapping[str, Any], name: str, pattern: re.Pattern[str] | str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not re.match(pattern, value):
        raise BadRequest(f"{name}: missing or malformed")
    return value


def reviewer(value: Any) -> str:
    """The reviewer's name from a request body; "web" when absent."""
    if value is None or value == "":
        return "web"
    if not isinstance(value, str) or not _REVIEWER.match(value):
        raise BadRequest("reviewer: 1-64 letters, digits, spaces or . @ - _")
    return value


def verdict(value: Any) -> str:
    if value not in VERDICTS:
        raise BadRequest(f"verdict must be one of {', '.join(VERDICTS)}")
    return str(value)


def label(value: Any) -> int | None:
    """1 for "mining", 0 for "not_mining" (`LABELS`), None for "clear" (remove the label)."""
    if value == "clear":
        return None
    if value not in LABELS:
        raise BadRequest(f"label must be one of {', '.join(LABELS)}, clear")
    return LABELS[str(value)]


def note(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 2000:
        raise BadRequest("note: text of at most 2000 characters")
    return value


def segment_or_pixel(source: Mapping[str, Any]) -> int | tuple[int, int]:
    """The superpixel index `segment`, or the pixel (`row`, `col`) to find it under."""
    if source.get("segment") not in (None, ""):
        try:
            return int(source["segment"])
        except (TypeError, ValueError):
            raise BadRequest("segment: expected an integer") from None
    try:
        return int(source["row"]), int(source["col"])
    except (KeyError, TypeError, ValueError):
        raise BadRequest("give segment, or row and col (pixel position in the tile)") from None


# ---------------------------------------------------------------- resolvers (404)


async def detection(request: web.Request, tile: str) -> dict[str, Any]:
    """The detection of `tile` the query's imagery_date/model name (else the newest)."""
    date, model = date_model(request.query)
    row = await queries.detection(request.app[DB], tile, date, model)
    if row is None:
        raise web.HTTPNotFound(text=f"no detection of tile {tile}")
    return row


async def target(request: web.Request, data: Mapping[str, Any]) -> dict[str, Any]:
    """The detection a write body names by tile_id, imagery_date and model_version."""
    tile = text(data, "tile_id", TILE_ID)
    date = data.get("imagery_date", "")
    model = data.get("model_version", "")
    if not isinstance(date, str) or not _DATE.match(date):
        raise BadRequest("imagery_date: malformed")
    if not isinstance(model, str) or not (model == "" or _MODEL.match(model)):
        raise BadRequest("model_version: malformed")
    row = await queries.detection(request.app[DB], tile, date, model or None)
    if row is None:
        raise web.HTTPNotFound(text=f"no detection of tile {tile} dated {date!r}")
    return row


def audit_id(request: web.Request) -> int:
    try:
        return int(request.match_info["audit_id"])
    except ValueError:
        raise BadRequest("audit id: an integer") from None


def tile_coords(request: web.Request) -> tuple[int, int, int]:
    """`{z}/{x}/{y}` of a vector tile path, each within its zoom's range."""
    try:
        z, x, y = (int(request.match_info[k]) for k in ("z", "x", "y"))
    except ValueError:
        raise BadRequest("tile z/x/y: three integers") from None
    if not 0 <= z <= 22:
        raise BadRequest(f"zoom {z}: from 0 to 22")
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise BadRequest(f"tile {z}/{x}/{y}: x and y from 0 to {2**z - 1} at zoom {z}")
    return z, x, y


EXCLUSIONS_MAX_BODY = 4 * 1024 * 1024
MAX_AREAS = 1000
_TEXT = re.compile(r"^[^\x00-\x1f]{0,200}$")


def exclusion_areas(data: Mapping[str, Any]) -> list[Any]:
    """The areas of a GeoJSON Feature or FeatureCollection of Polygons/MultiPolygons, each with
    a `reason` property (and optionally `name` and `region`)."""
    from amberscan.web.exclusion_queries import Area

    if data.get("type") == "Feature":
        features = [data]
    elif data.get("type") == "FeatureCollection" and isinstance(data.get("features"), list):
        features = data["features"]
    else:
        raise BadRequest("body: a GeoJSON Feature or FeatureCollection of exclusion polygons")
    if not 1 <= len(features) <= MAX_AREAS:
        raise BadRequest(f"features: from 1 to {MAX_AREAS} exclusion polygons")
    out = []
    for i, feature in enumerate(features):
        where = f"feature {i}"
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geometry, dict) or geometry.get("type") not in (
            "Polygon",
            "MultiPolygon",
        ):
            raise BadRequest(f"{where}: the geometry must be a Polygon or MultiPolygon")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise BadRequest(f"{where}: properties must be an object")
        reason = props.get("reason")
        if not isinstance(reason, str) or not reason.strip() or not _TEXT.match(reason):
            raise BadRequest(
                f"{where}: properties.reason, 1-200 characters (e.g. 'licensed quarry')"
            )
        extra = {k: props.get(k, "") for k in ("name", "region")}
        for key, value in extra.items():
            if not isinstance(value, str) or not _TEXT.match(value):
                raise BadRequest(f"{where}: properties.{key}: text of at most 200 characters")
        out.append(Area(json.dumps(geometry), reason.strip(), extra["name"], extra["region"]))
    return out


def area_id(request: web.Request) -> int:
    try:
        return int(request.match_info["area_id"])
    except ValueError:
        raise BadRequest("exclusion area id: an integer") from None
